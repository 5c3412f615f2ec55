"""The mathematical microtubule model: the baseline the DDPM is compared against (Saguy et al. 2023).

Each image holds a random number of semi-flexible filaments, 2-D worm-like chains drawn as a
tangent-angle random walk of step ds::

    theta_{k+1} = theta_k + xi_k,   xi_k ~ N(0, ds / Lp),   r_{k+1} = r_k + ds (cos theta_k, sin theta_k)

so that <cos(theta(s) - theta(0))> = exp(-s / (2 Lp)) (2-D chain with persistence length Lp).
Every filament passes through a uniformly drawn point of the field in a uniform direction;
long ones cross it. A filament is labelled like an immunostained microtubule:

- punctate: labels on the tubule surface (Poisson, ``labels_per_um`` times a per-filament
  brightness), each displaced across the filament by r cos(phi), phi ~ U(0, 2 pi), with
  r = width/2 + linker (projection of a labelled cylinder); each label blinks Poisson
  (``blinks_per_label``) times, each blink jittered by the localization precision and rendered
  as a normalized Gaussian of that precision (like :mod:`factory.render`);
- smooth: the expectation of that, an anti-aliased line: chain vertices every ds rendered as
  Gaussians of variance r^2/2 + 2 precision^2 (second moments matched).

Isolated labels scattered at ``background_per_um2`` (``background_blinks`` localizations each)
add the sparse bright spots seen in real STORM images. Each image is scaled like a training image (:func:`factory.images.normalize_unit`: the
99.9th percentile -> 1, clipped to [0, 1]). Image i draws everything from
``SeedSequence(seed, spawn_key=(i,))``, so it does not depend on n.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np

from factory.errors import FactoryError
from factory.images import normalize_unit
from factory.render import splat_gaussians


MAX_SIDE_PX = 16384  # one image of 16384^2 float32 is 1 GiB: larger sides are a unit mistake


class Texture(str, Enum):
    PUNCTATE = "punctate"  # individual blinking labels, like a rendered STORM image
    SMOOTH = "smooth"  # the expected density: a continuous anti-aliased line


@dataclass(frozen=True)
class SimulationConfig:
    size_px: int = 256  # image side (square), pixels
    pixel_nm: float = 20.0  # pixel size, nm
    filaments: tuple[int, int] = (4, 12)  # filaments per image, inclusive range
    length_nm: tuple[float, float] = (3_000.0, 20_000.0)  # filament contour length range, nm
    persistence_length_nm: float = 10_000.0  # Lp; microtubules in cells ~ 10-100 um
    step_nm: float = 10.0  # chain step ds, nm
    width_nm: float = 25.0  # microtubule outer diameter, nm
    linker_nm: float = 15.0  # label distance from the tubule surface (antibodies), nm
    precision_nm: float = 15.0  # localization precision (blur) sigma, nm
    texture: Texture = Texture.PUNCTATE
    labels_per_um: float = 80.0  # mean labels per um of filament at brightness 1
    blinks_per_label: float = 4.0  # mean localizations per label (Poisson)
    brightness: tuple[float, float] = (0.3, 1.0)  # per-filament label density factor, uniform range
    background_per_um2: float = 1.5  # isolated labels per um^2 of field
    background_blinks: float = 12.0  # mean localizations per isolated label (a free antibody carries several dyes)

    def check(self) -> None:
        """Raise a FactoryError naming the first impossible parameter."""
        positive = {"size_px": self.size_px, "pixel_nm": self.pixel_nm, "persistence_length_nm": self.persistence_length_nm,
                    "step_nm": self.step_nm, "precision_nm": self.precision_nm}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise FactoryError(f"{name} must be positive, got {value}.")
        if self.size_px > MAX_SIDE_PX:
            raise FactoryError(f"size_px {self.size_px} is too large: at most {MAX_SIDE_PX} px per side "
                               f"({MAX_SIDE_PX ** 2 * 4 / 2**30:.0f} GiB of float32 per image).")
        non_negative = {"width_nm": self.width_nm, "linker_nm": self.linker_nm, "labels_per_um": self.labels_per_um,
                        "blinks_per_label": self.blinks_per_label, "background_per_um2": self.background_per_um2,
                        "background_blinks": self.background_blinks}
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise FactoryError(f"{name} must be zero or positive, got {value}.")
        for name, (lo, hi), low in (("filaments", self.filaments, 0), ("length_nm", self.length_nm, 0),
                                    ("brightness", self.brightness, 0)):
            if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi and (name == "filaments" or lo > 0)):
                raise FactoryError(f"{name} must be a range (min, max) with 0 {'<=' if name == 'filaments' else '<'} min <= max, got ({lo}, {hi}).")
        if self.step_nm > self.pixel_nm:
            raise FactoryError(f"step_nm ({self.step_nm}) must not exceed the pixel size ({self.pixel_nm} nm).")


@dataclass
class Filaments:
    """The chains of one image, concatenated: vertex k of all chains."""
    x_nm: np.ndarray  # (K,) vertex x, nm
    y_nm: np.ndarray  # (K,) vertex y, nm
    theta: np.ndarray  # (K,) tangent angle of the step leaving vertex k, rad
    chain: np.ndarray  # (K,) int, which filament the vertex belongs to
    brightness: np.ndarray  # (F,) label density factor per filament


def image_rng(seed: int, i: int) -> np.random.Generator:
    """Generator of image i: everything random about it comes from here."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(i),)))


def _segment_cumsum(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarted at every segment start: (K,) -> (K,)."""
    total = np.cumsum(values)
    return total - np.repeat(total[starts] - values[starts], counts)


def filaments(cfg: SimulationConfig, rng: np.random.Generator) -> Filaments:
    """Worm-like chains through the field (see the module docstring), all chains vectorized at once."""
    side_nm = cfg.size_px * cfg.pixel_nm
    F = int(rng.integers(cfg.filaments[0], cfg.filaments[1] + 1))
    length = rng.uniform(*cfg.length_nm, size=F)  # (F,) nm
    theta0 = rng.uniform(0.0, 2 * np.pi, size=F)  # (F,) rad
    anchor = rng.uniform(0.0, side_nm, size=(F, 2))  # (F, 2) nm, a point of the field on each filament
    anchor_at = rng.uniform(0.0, 1.0, size=F)  # (F,) where along the filament the anchor is
    brightness = rng.uniform(*cfg.brightness, size=F)  # (F,)
    counts = np.maximum(np.ceil(length / cfg.step_nm).astype(np.int64), 1) + 1  # (F,) vertices
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)  # (F,)
    kicks = rng.normal(0.0, math.sqrt(cfg.step_nm / cfg.persistence_length_nm), size=int(counts.sum()))  # (K,)
    kicks[starts] = 0.0
    theta = _segment_cumsum(kicks, starts, counts) + np.repeat(theta0, counts)  # (K,) rad
    step_x, step_y = cfg.step_nm * np.cos(theta), cfg.step_nm * np.sin(theta)  # (K,) nm
    x = _segment_cumsum(step_x, starts, counts) - step_x  # (K,) vertex 0 of each chain at 0
    y = _segment_cumsum(step_y, starts, counts) - step_y
    pin = starts + np.floor(anchor_at * (counts - 1)).astype(np.int64)  # (F,) anchored vertex
    x += np.repeat(anchor[:, 0] - x[pin], counts)
    y += np.repeat(anchor[:, 1] - y[pin], counts)
    return Filaments(x, y, theta, np.repeat(np.arange(F), counts), brightness)


def _labels(cfg: SimulationConfig, fil: Filaments, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label positions on the filaments' surfaces: (L,), (L,) nm."""
    F = len(fil.brightness)
    counts = np.bincount(fil.chain, minlength=F)  # (F,) vertices
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    length = (counts - 1) * cfg.step_nm  # (F,) nm
    n = rng.poisson(cfg.labels_per_um * fil.brightness * length / 1e3)  # (F,) labels
    owner = np.repeat(np.arange(F), n)  # (L,)
    pos = rng.uniform(0.0, 1.0, size=owner.size) * (counts[owner] - 1)  # (L,) position along the chain, steps
    k = starts[owner] + np.minimum(np.floor(pos).astype(np.int64), counts[owner] - 2)  # (L,) vertex before
    frac = pos - (k - starts[owner])  # (L,) in [0, 1]
    x = fil.x_nm[k] + frac * cfg.step_nm * np.cos(fil.theta[k])  # (L,) on the axis
    y = fil.y_nm[k] + frac * cfg.step_nm * np.sin(fil.theta[k])
    across = (cfg.width_nm / 2 + cfg.linker_nm) * np.cos(rng.uniform(0.0, 2 * np.pi, size=owner.size))  # (L,) nm
    return x - across * np.sin(fil.theta[k]), y + across * np.cos(fil.theta[k])


def simulate_image(cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """One image: (H, W) float32 in [0, 1]."""
    side_nm = cfg.size_px * cfg.pixel_nm
    fil = filaments(cfg, rng)
    shape = (cfg.size_px, cfg.size_px)
    radius_nm = cfg.width_nm / 2 + cfg.linker_nm
    background = rng.poisson(cfg.background_per_um2 * (side_nm / 1e3) ** 2)
    bx, by = rng.uniform(0.0, side_nm, size=(2, background))  # (B,) nm isolated labels
    if cfg.texture == Texture.SMOOTH:
        # expected localizations per vertex (filaments) and per background label, as the punctate texture would give
        w = np.concatenate([cfg.blinks_per_label * cfg.labels_per_um * cfg.step_nm / 1e3 * fil.brightness[fil.chain],
                            np.full(background, cfg.background_blinks)])  # (K + B,)
        x, y = np.concatenate([fil.x_nm, bx]), np.concatenate([fil.y_nm, by])
        sigma_nm = math.sqrt(radius_nm ** 2 / 2 + 2 * cfg.precision_nm ** 2)
        density = splat_gaussians(x / cfg.pixel_nm, y / cfg.pixel_nm, sigma_nm / cfg.pixel_nm, shape, w)  # (H, W)
    else:
        lx, ly = _labels(cfg, fil, rng)
        lx, ly = np.concatenate([lx, bx]), np.concatenate([ly, by])  # (L + B,) nm
        mean_blinks = np.repeat([cfg.blinks_per_label, cfg.background_blinks], [lx.size - background, background])  # (L + B,)
        blinks = rng.poisson(mean_blinks)  # (L + B,)
        x = np.repeat(lx, blinks) + rng.normal(0.0, cfg.precision_nm, size=int(blinks.sum()))  # (M,) nm localizations
        y = np.repeat(ly, blinks) + rng.normal(0.0, cfg.precision_nm, size=int(blinks.sum()))
        density = splat_gaussians(x / cfg.pixel_nm, y / cfg.pixel_nm, cfg.precision_nm / cfg.pixel_nm, shape)  # (H, W)
    image, _ = normalize_unit(density.astype(np.float32))
    return image


def simulate_frames(cfg: SimulationConfig, n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The n images one at a time, (H, W) float32 each (memory flat in n); checks the request first."""
    cfg.check()
    if n < 1:
        raise FactoryError(f"the number of images must be at least 1, got {n}.")
    return (simulate_image(cfg, image_rng(seed, i)) for i in range(n))


def simulate(cfg: SimulationConfig, n: int, seed: int = 0) -> np.ndarray:
    """n images: (n, H, W) float32 in [0, 1]; image i is the same for every n >= i + 1."""
    frames = simulate_frames(cfg, n, seed)  # checks the request now
    out = np.empty((n, cfg.size_px, cfg.size_px), np.float32)  # (N, H, W)
    for i, image in enumerate(frames):
        out[i] = image
    return out
