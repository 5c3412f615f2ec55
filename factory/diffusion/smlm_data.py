"""What the conditional model trains on: (SMLM frame, KDE target) pairs behind one small interface.

A source is map-style, like a ``torch.utils.data.Dataset``: ``len(source)`` pairs,
``source[i]`` -> :class:`SmlmPair`, plus its :class:`SmlmGeometry`. Random access by
index (not a stream) is what makes training resumable bit for bit: the batch order is
a function of the training generator's state alone, which the training state saves.

- :func:`store_source`: pairs from an smlm store (``frames`` (N, F, h, w) uint16 ADU,
  ``kde`` (N, F, H, W) float32, the emitter table and the manifest's camera columns).
- :class:`GaussianSpots`: isolated Gaussian spots at uniform sub-pixel positions with
  Poisson noise. A minimal, exactly known source for tests and benchmarks; it is not
  a microscope model (no blinking, no camera chain: frames are photo-electrons).

Coordinates: x is the column, y the row, in nm from the field's top-left corner; pixel
j spans [j, j + 1) pixels, so its centre is at (j + 0.5) * pixel_nm (the convention of
:func:`factory.render.splat_gaussians`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from factory.errors import FactoryError
from factory.render import splat_gaussians


@dataclass(frozen=True)
class SmlmGeometry:
    """Pixel sizes and widths shared by every pair of a source (and stored in the model)."""

    lr_pixel_nm: float  # camera pixel, as seen in the sample plane
    hr_pixel_nm: float  # KDE grid; lr_pixel_nm / hr_pixel_nm must be an integer
    kde_sigma_nm: float  # width of each emitter's normalized Gaussian in the KDE
    psf_sigma_nm: float  # Gaussian PSF width of the frames (used to estimate photons per emitter)

    @property
    def upscale(self) -> int:
        return int(round(self.lr_pixel_nm / self.hr_pixel_nm))

    @property
    def kde_sigma_px(self) -> float:
        return self.kde_sigma_nm / self.hr_pixel_nm

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise FactoryError(f"the SMLM geometry's {name} must be a positive number of nm, got {value}.")
        k = self.lr_pixel_nm / self.hr_pixel_nm
        if abs(k - round(k)) > 1e-6 or not 1 <= round(k) <= 64:
            raise FactoryError(f"the LR pixel ({self.lr_pixel_nm:g} nm) must be an integer multiple (1..64) of the HR pixel ({self.hr_pixel_nm:g} nm).")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SmlmGeometry":
        return cls(*(float(d[k]) for k in ("lr_pixel_nm", "hr_pixel_nm", "kde_sigma_nm", "psf_sigma_nm")))


@dataclass(frozen=True)
class SmlmPair:
    frame_e: np.ndarray  # (h, w) float32 photo-electrons above the camera offset: (ADU - offset) * gain / em_gain
    kde: np.ndarray  # (H, W) float32 = (h k, w k): sum over emitters of a normalized Gaussian (kde_sigma_nm), per HR pixel
    emitters_nm: np.ndarray  # (n, 2) float64 true (x, y) positions, nm


class SmlmSource(Protocol):
    geometry: SmlmGeometry

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> SmlmPair: ...


def store_source(store: str, holdout: bool = False) -> SmlmSource:
    """Pairs from an smlm store (``factory generate --mode smlm``): frame f of sample i -> (frame in
    photo-electrons above offset from each sample's camera and the run's sCMOS maps, its KDE target,
    its true emitters). Checked reads; the held-out split is the last committed shard
    (:class:`factory.data.frames.StoreSource`)."""
    from factory.data.frames import StoreSource

    return StoreSource(store, holdout=holdout)


class GaussianSpots:
    """``n`` frames of isolated Gaussian spots with Poisson noise; pair i depends only on (seed, i).

    Per frame: ``emitters`` (low, high) emitters at uniform continuous positions at least
    ``margin_nm`` inside the field, photons per emitter log-uniform in ``photons``, a flat
    ``background_e`` photo-electrons per LR pixel; expected image = background + sum of
    pixel-integrated Gaussians (``psf_sigma_nm``) x photons, frame ~ Poisson(expected)
    (QE 1, no read noise). The KDE target is the sum of pixel-integrated normalized
    Gaussians of ``kde_sigma_nm`` on the HR grid.
    """

    def __init__(self, n: int, seed: int, geometry: SmlmGeometry, lr_side: int = 8,
                 emitters: tuple[int, int] = (1, 3), photons: tuple[float, float] = (500.0, 3000.0),
                 background_e: float = 5.0, margin_nm: float | None = None):
        geometry.check()
        self.n, self.seed, self.geometry, self.lr_side = n, seed, geometry, lr_side
        self.emitters, self.photons, self.background_e = emitters, photons, background_e
        self.margin_nm = geometry.lr_pixel_nm if margin_nm is None else margin_nm

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> SmlmPair:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g, side = self.geometry, self.lr_side
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(i),)))
        count = int(rng.integers(self.emitters[0], self.emitters[1] + 1))
        field_nm = side * g.lr_pixel_nm
        xy = rng.uniform(self.margin_nm, field_nm - self.margin_nm, (count, 2))  # (n, 2) nm
        photons = np.exp(rng.uniform(math.log(self.photons[0]), math.log(self.photons[1]), count))  # (n,)
        u, v = xy[:, 0] / g.lr_pixel_nm, xy[:, 1] / g.lr_pixel_nm
        expected = self.background_e + splat_gaussians(u, v, np.full(count, g.psf_sigma_nm / g.lr_pixel_nm),
                                                        (side, side), weights=photons)  # (h, w) e-
        frame = rng.poisson(expected).astype(np.float32)  # (h, w) photo-electrons
        H = side * g.upscale
        kde = splat_gaussians(xy[:, 0] / g.hr_pixel_nm, xy[:, 1] / g.hr_pixel_nm, np.full(count, g.kde_sigma_px),
                              (H, H)).astype(np.float32)  # (H, W) emitters per HR pixel
        return SmlmPair(frame, kde, xy)
