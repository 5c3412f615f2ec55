"""Render SMLM localization tables (ThunderSTORM or plain CSV, nm) into super-resolution images.

Two renderers, both on a grid of pixel ``p`` nm whose pixel (r, c) covers
``[x0 + c p, x0 + (c+1) p) x [y0 + r p, y0 + (r+1) p)``:

- histogram: counts of localizations per pixel (ThunderSTORM "Histogram", no jitter);
- gaussian: each localization a normalized 2-D Gaussian of its own precision sigma_i
  (ThunderSTORM "Normalized Gaussian"), integrated over each pixel::

      I[r, c] = sum_i  w_x,i[c] * w_y,i[r],
      w_x,i[c] = 1/2 [erf((x0 + (c+1) p - x_i) / (sqrt 2 sigma_i)) - erf((x0 + c p - x_i) / (sqrt 2 sigma_i))]

  truncated at 4 sigma and renormalized, so every localization adds exactly 1 to the image
  (less only where its Gaussian crosses the field border).

Both are vectorized: the Gaussian renderer splats (n, K, K) patches with ``np.add.at``,
grouped by patch radius and chunked so memory stays bounded.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from factory import images
from factory.errors import FactoryError

TRUNCATE_SIGMA = 4.0  # Gaussian patches reach this many sigma
MAX_PIXELS = 1 << 28  # 268 M pixels (1 GiB of float32): larger fields are almost always a unit mistake
_CHUNK_ENTRIES = 1 << 22  # patch pixels splatted per np.add.at call

# Column names after normalization (strip quotes/space, lower-case); first match wins.
_THUNDERSTORM = {"x": ("x [nm]",), "y": ("y [nm]",), "sigma": ("uncertainty [nm]", "uncertainty_xy [nm]"), "frame": ("frame",)}
_PLAIN = {"x": ("x", "x_nm"), "y": ("y", "y_nm"), "sigma": ("uncertainty", "uncertainty_nm", "sigma", "sigma_nm", "precision", "precision_nm"),
          "frame": ("frame",)}


class RenderMode(str, Enum):
    HISTOGRAM = "histogram"  # counts per pixel
    GAUSSIAN = "gaussian"  # normalized Gaussian of each localization's precision


@dataclass(frozen=True)
class RenderConfig:
    pixel_nm: float = 20.0  # output pixel size, nm
    mode: RenderMode = RenderMode.GAUSSIAN
    sigma_nm: float = 10.0  # precision used where the table has none (or a non-finite / non-positive one), nm
    size_nm: tuple[float, float] | None = None  # field (width, height) in nm; default: the data extent
    origin_nm: tuple[float, float] | None = None  # (x, y) of the field's top-left corner, nm; default: the data minimum


@dataclass
class LocalizationTable:
    x_nm: np.ndarray  # (N,) float64
    y_nm: np.ndarray  # (N,) float64
    sigma_nm: np.ndarray | None  # (N,) float64 localization precision, None when the table has none
    frame: np.ndarray | None  # (N,) int64, None when the table has none
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.x_nm)


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except UnicodeDecodeError:
        raise FactoryError(f"{path}: not a text CSV file.") from None
    except OSError as exc:
        raise FactoryError(f"cannot read {path}: {exc.strerror or exc}.") from None


def read_localizations(path: str | Path) -> LocalizationTable:
    """Read a ThunderSTORM CSV (``"x [nm]"``, ``"y [nm]"``, optional ``"uncertainty [nm]"`` /
    ``"uncertainty_xy [nm]"``, ``"frame"``) or a plain CSV (``x``, ``y`` in nm, optional
    ``uncertainty`` / ``sigma``, ``frame``). ThunderSTORM's ``"sigma [nm]"`` is the PSF width, not a
    precision, and is ignored."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise FactoryError(f"{path}: no such file.")
    names = _header(path)
    norm = {n.strip().strip('"').strip().lower(): n for n in names}
    for flavour in (_THUNDERSTORM, _PLAIN):
        cols = {key: next((norm[c] for c in options if c in norm), None) for key, options in flavour.items()}
        if cols["x"] is not None and cols["y"] is not None:
            break
    else:
        listed = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "") or "none"
        raise FactoryError(f"{path}: no localization coordinates found (columns: {listed}); expected ThunderSTORM "
                           "'x [nm]' and 'y [nm]' or plain 'x' and 'y' in nm.")
    wanted = [c for c in cols.values() if c is not None]
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.float64() for c in wanted}))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FactoryError(f"{path}: not a readable localization table ({first.rstrip('.')}).") from None

    def column(key: str) -> np.ndarray | None:
        if cols[key] is None:
            return None
        return table.column(cols[key]).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)

    x, y, sigma, frame = column("x"), column("y"), column("sigma"), column("frame")
    if len(x) == 0:
        raise FactoryError(f"{path}: the table has a header but no localizations.")
    bad = int(np.count_nonzero(~(np.isfinite(x) & np.isfinite(y))))
    if bad:
        raise FactoryError(f"{path}: {bad} of {len(x)} rows have a missing or non-finite x or y.")
    if sigma is not None:
        negative = int(np.count_nonzero(sigma < 0))  # NaN (a missing value) takes the default; a negative one is garbage
        if negative:
            raise FactoryError(f"{path}: {negative} of {len(x)} rows have a negative localization uncertainty "
                               f"({cols['sigma']!r}); an uncertainty is a standard deviation in nm, >= 0.")
    if frame is not None:
        frame = np.nan_to_num(frame, nan=-1).astype(np.int64)
    return LocalizationTable(x, y, sigma, frame, path)


def field_of_view(locs: LocalizationTable, cfg: RenderConfig) -> tuple[float, float, int, int]:
    """(x0_nm, y0_nm, W, H): the top-left corner and the size in pixels of the rendered field.

    Default: from the pixel-aligned data minimum to the pixel holding the data maximum."""
    p = cfg.pixel_nm
    if cfg.origin_nm is not None:
        x0, y0 = map(float, cfg.origin_nm)
    else:
        x0, y0 = math.floor(locs.x_nm.min() / p) * p, math.floor(locs.y_nm.min() / p) * p
    if cfg.size_nm is not None:
        W, H = (math.ceil(s / p - 1e-9) for s in cfg.size_nm)
    else:
        W, H = math.floor((locs.x_nm.max() - x0) / p) + 1, math.floor((locs.y_nm.max() - y0) / p) + 1
    if W < 1 or H < 1:
        raise FactoryError(f"the field from origin ({x0:g}, {y0:g}) nm holds no localizations; check --origin-nm.")
    if W * H > MAX_PIXELS:
        raise FactoryError(f"the field is {W} x {H} pixels at {p:g} nm; pass a larger --pixel-nm or a --size-nm "
                           "(are the coordinates really in nm?).")
    return x0, y0, W, H


def _check(cfg: RenderConfig) -> None:
    if not (math.isfinite(cfg.pixel_nm) and cfg.pixel_nm > 0):
        raise FactoryError(f"--pixel-nm must be positive, got {cfg.pixel_nm}.")
    if not (math.isfinite(cfg.sigma_nm) and cfg.sigma_nm > 0):
        raise FactoryError(f"--sigma-nm must be positive, got {cfg.sigma_nm}.")
    if cfg.size_nm is not None and not all(math.isfinite(s) and s > 0 for s in cfg.size_nm):
        raise FactoryError(f"--size-nm must be two positive lengths, got {cfg.size_nm}.")


def render(locs: LocalizationTable, cfg: RenderConfig) -> np.ndarray:
    """Render a localization table: (H, W) float32, localizations (histogram) or their Gaussians per pixel."""
    _check(cfg)
    if len(locs) == 0:
        raise FactoryError("the localization table is empty.")
    x0, y0, W, H = field_of_view(locs, cfg)
    u = (locs.x_nm - x0) / cfg.pixel_nm  # (N,) column coordinate, px
    v = (locs.y_nm - y0) / cfg.pixel_nm  # (N,) row coordinate, px
    if cfg.mode == RenderMode.HISTOGRAM:
        return histogram(u, v, (H, W)).astype(np.float32)
    sigma_nm = np.full(len(locs), cfg.sigma_nm) if locs.sigma_nm is None else locs.sigma_nm
    sigma_nm = np.where(np.isfinite(sigma_nm) & (sigma_nm > 0), sigma_nm, cfg.sigma_nm)
    return splat_gaussians(u, v, sigma_nm / cfg.pixel_nm, (H, W)).astype(np.float32)


def histogram(u: np.ndarray, v: np.ndarray, shape: tuple[int, int], weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of weights (default 1) per pixel at continuous pixel coordinates (u column, v row): (H, W) float64."""
    H, W = shape
    c, r = np.floor(u), np.floor(v)
    inside = (c >= 0) & (c < W) & (r >= 0) & (r < H)
    flat = r[inside].astype(np.int64) * W + c[inside].astype(np.int64)
    w = None if weights is None else weights[inside]
    return np.bincount(flat, w, minlength=H * W).astype(np.float64).reshape(H, W)


# Phi(z) - 1/2 = erf(z / sqrt 2) / 2 tabulated once on a uniform grid (numpy has no erf; importing torch or
# scipy for it costs seconds per CLI call). Linear interpolation error <= h^2/8 max|phi'| = 3e-8.
_CDF_Z_MAX, _CDF_STEP = 9.0, 1e-3
_CDF = np.array([0.5 * math.erf(z / math.sqrt(2.0)) for z in np.arange(-_CDF_Z_MAX, _CDF_Z_MAX + _CDF_STEP / 2, _CDF_STEP)])


def _half_normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) - 1/2 for any shape, by linear interpolation in the table (exactly +-1/2 beyond 9 sigma)."""
    t = (np.clip(z, -_CDF_Z_MAX, _CDF_Z_MAX) + _CDF_Z_MAX) / _CDF_STEP  # fractional table index
    i = np.minimum(t.astype(np.intp), len(_CDF) - 2)
    lo = _CDF[i]
    return lo + (t - i) * (_CDF[i + 1] - lo)


def _axis_weights(center: np.ndarray, sigma: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-integrated 1-D Gaussians: first pixel index (n,) and weights (n, 2R+1) summing to 1."""
    first = np.floor(center).astype(np.int64) - radius  # (n,)
    edges = first[:, None] + np.arange(2 * radius + 2)  # (n, K+1) pixel edges, px
    cdf = _half_normal_cdf((edges - center[:, None]) / sigma[:, None])  # (n, K+1)
    w = np.diff(cdf, axis=1)  # (n, K)
    return first, w / w.sum(axis=1, keepdims=True)


def splat_gaussians(u: np.ndarray, v: np.ndarray, sigma_px: np.ndarray, shape: tuple[int, int],
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of normalized, pixel-integrated Gaussians (u column, v row, sigma in px; optional weight each): (H, W) float64.

    Patches land on a canvas padded by the largest radius, so no patch needs clipping; the pad is cropped."""
    H, W = shape
    sigma_px = np.maximum(np.broadcast_to(np.asarray(sigma_px, np.float64), u.shape), 1e-6)  # (N,)
    if weights is not None:
        weights = np.broadcast_to(np.asarray(weights, np.float64), u.shape)  # (N,)
    radius = np.ceil(TRUNCATE_SIGMA * sigma_px).astype(np.int64)  # (N,)
    near = (u >= -radius) & (u < W + radius) & (v >= -radius) & (v < H + radius)  # patch overlaps the field
    pad = 2 * int(radius[near].max(initial=0)) + 1  # patches of near points reach at most 2R beyond the field
    Wp = W + 2 * pad
    canvas = np.zeros((H + 2 * pad) * Wp, np.float64)  # (Hp * Wp,)
    index_type = np.int32 if canvas.size < 2**31 else np.int64
    for R in np.unique(radius[near]):
        idx = np.flatnonzero(near & (radius == R))
        idx = idx[np.argsort(np.floor(v[idx]) * W + np.floor(u[idx]), kind="stable")]  # memory locality
        K = 2 * int(R) + 1
        offsets = (np.arange(K)[:, None] * Wp + np.arange(K)[None, :]).ravel().astype(index_type)  # (K*K,) patch -> canvas
        step = max(1, _CHUNK_ENTRIES // (K * K))
        for i in range(0, len(idx), step):
            j = idx[i:i + step]
            c0, wx = _axis_weights(u[j], sigma_px[j], int(R))  # (n,), (n, K)
            r0, wy = _axis_weights(v[j], sigma_px[j], int(R))
            if weights is not None:
                wy *= weights[j, None]
            patch = wy[:, :, None] * wx[:, None, :]  # (n, K, K)
            flat = ((r0 + pad) * Wp + (c0 + pad)).astype(index_type)[:, None] + offsets  # (n, K*K)
            np.add.at(canvas, flat.ravel(), patch.ravel())
    return canvas.reshape(H + 2 * pad, Wp)[pad:pad + H, pad:pad + W].copy()


def load_training_image(path: str | Path, pixel_nm: float | None) -> images.ImageStack:
    """A training image from a TIFF (read as is, with its own pixel size or None) or from a
    localization table (``.csv``, rendered as normalized Gaussians at ``pixel_nm``): (1|N, H, W)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return images.read_stack(path)
    if pixel_nm is None:
        raise FactoryError(f"{path}: a localization table needs a pixel size to be rendered at.")
    image = render(read_localizations(path), RenderConfig(pixel_nm=pixel_nm, mode=RenderMode.GAUSSIAN))  # (H, W)
    return images.ImageStack(image[None], float(pixel_nm), path)
