"""How pair values are scaled for training and export (numpy only, no torch).

HR is stored as normalized density in [0, 1] and LR as camera ADU (uint16). A
:class:`Normalization` maps a (N, H, W) block to float32:

- ``none``: as stored (LR in ADU, HR in normalized density);
- ``percentile``: per image (x - p_lo) / (p_hi - p_lo + 1e-20), default (p_lo, p_hi) = (1, 99.8) %
  (CSBDeep's ``normalize``, Weigert et al. 2018, "Content-aware image restoration");
- ``camera`` (LR only): photo-electrons per pixel, (ADU - offset_adu) * gain_e_per_adu / em_gain with
  each sample's manifest values: the inverse of :mod:`factory.optics.camera` without its noise,
  rounding and clipping (divide further by ``qe`` for photons).

:class:`Upsample` names how LR reaches the HR grid (``torch.nn.functional.interpolate`` in
:func:`factory.data.upsample`).
"""
from __future__ import annotations

from enum import Enum

import numpy as np

CAMERA_FIELDS = ("offset_adu", "gain_e_per_adu", "em_gain")  # manifest columns the camera normalization needs
DEFAULT_PERCENTILES = (1.0, 99.8)


class Normalization(str, Enum):
    none = "none"  # as stored (LR ADU, HR normalized density), float32
    percentile = "percentile"  # per image (x - p_lo) / (p_hi - p_lo)
    camera = "camera"  # LR only: photo-electrons = (ADU - offset_adu) * gain_e_per_adu / em_gain


class Upsample(str, Enum):
    none = "none"  # LR stays (1, h, w)
    nearest = "nearest"  # each LR pixel repeated k x k: (1, H, W)
    bilinear = "bilinear"  # (1, H, W), align_corners=False


def percentile_normalize(x: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Per image (x - p_lo) / (p_hi - p_lo + 1e-20) over the last two axes: (N, H, W) -> (N, H, W) float32."""
    lo, hi = np.percentile(x, percentiles, axis=(-2, -1), keepdims=True)  # (N, 1, 1) each
    return ((x - lo) / (hi - lo + 1e-20)).astype(np.float32)


def camera_electrons(lr_adu: np.ndarray, offset_adu, gain_e_per_adu, em_gain) -> np.ndarray:
    """(N, h, w) ADU -> photo-electrons, with per-sample parameters of shape (N,)."""
    offset, gain, em = (np.asarray(v, np.float64).reshape(-1, 1, 1) for v in (offset_adu, gain_e_per_adu, em_gain))  # (N, 1, 1)
    return ((lr_adu - offset) * (gain / em)).astype(np.float32)


def normalize(x: np.ndarray, how: Normalization, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
              camera: dict | None = None) -> np.ndarray:
    """One Normalization of a (N, H, W) block; ``camera`` maps each of CAMERA_FIELDS to the N samples' values."""
    how = Normalization(how)
    if how is Normalization.percentile:
        return percentile_normalize(x.astype(np.float32), percentiles)
    if how is Normalization.camera:
        if camera is None:
            raise ValueError("camera normalization needs the samples' offset_adu, gain_e_per_adu and em_gain")
        return camera_electrons(x, *(camera[name] for name in CAMERA_FIELDS))
    return x.astype(np.float32, copy=False)
