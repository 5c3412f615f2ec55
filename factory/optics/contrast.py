"""LR contrast statistics: how bright the structure is against the background, comparable across sources.

For one LR frame in photo-electrons above the camera offset (``(ADU - offset_adu) *
gain_e_per_adu / em_gain``, :func:`factory.normalize.camera_electrons`), its contrast is

    C = p_hi / max(p_lo, 1 e-),         (p_lo, p_hi) = the (1, 99.8) percentiles of its pixels,

the ratio of its bright structure to its dark floor (the percentiles of CSBDeep's normalization).
The floor of 1 e- keeps C finite where read noise pulls the dark percentile to or below zero.
A set of frames (a store's LR images, or the tiles of a real widefield image cut to the store's
LR size, :func:`tiles`) is summarized by the median and the 10-90 % range of C. Used to put
the synthetic pairs of each structure source next to the user's real image (issue 10 measured
medians of 6.0 for DDPM pairs, 24.7 for mathematical-model pairs and 8.5 for real widefield
tiles, all with ``photon_scale = peak``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.errors import FactoryError

PERCENTILES = (1.0, 99.8)
FLOOR_E = 1.0  # photo-electrons


@dataclass(frozen=True)
class ContrastStats:
    """Median and 10 / 90 % quantiles of the per-frame contrast C over ``frames`` frames."""

    median: float
    p10: float
    p90: float
    frames: int

    def line(self) -> str:
        return f"median {self.median:.1f} (10-90 %: {self.p10:.1f}-{self.p90:.1f}, {self.frames} frames)"


def frame_contrast(electrons: np.ndarray, percentiles: tuple[float, float] = PERCENTILES,
                   floor_e: float = FLOOR_E) -> np.ndarray:
    """C per frame: (N, h, w) or (h, w) photo-electrons -> (N,) float64 (see the module docstring)."""
    x = np.asarray(electrons, np.float64)
    if x.ndim not in (2, 3) or 0 in x.shape:
        raise FactoryError(f"contrast needs (h, w) or (N, h, w) frames, got shape {x.shape}.")
    lo, hi = np.percentile(x.reshape(-1, *x.shape[-2:]), percentiles, axis=(1, 2))  # (N,) each
    return hi / np.maximum(lo, floor_e)


def tiles(image: np.ndarray, tile_px: int) -> np.ndarray:
    """Non-overlapping tile_px x tile_px tiles of a 2-D image (the remainder is dropped): (T, tile_px, tile_px)."""
    h, w = image.shape
    if not 1 <= tile_px <= min(h, w):
        raise FactoryError(f"tile side {tile_px} px must be between 1 and the image side ({h}x{w}).")
    ny, nx = h // tile_px, w // tile_px
    blocks = image[: ny * tile_px, : nx * tile_px].reshape(ny, tile_px, nx, tile_px)
    return blocks.transpose(0, 2, 1, 3).reshape(-1, tile_px, tile_px)


def contrast_stats(electrons: np.ndarray, percentiles: tuple[float, float] = PERCENTILES,
                   floor_e: float = FLOOR_E) -> ContrastStats:
    """:class:`ContrastStats` of (N, h, w) frames in photo-electrons."""
    c = frame_contrast(electrons, percentiles, floor_e)
    p10, median, p90 = np.percentile(c, (10, 50, 90))
    return ContrastStats(float(median), float(p10), float(p90), len(c))
