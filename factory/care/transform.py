"""LR camera frame -> the CARE network's input: one function for training and for apply.

    x = model_input(lr_adu, transform, camera)       # (N, h, w) ADU -> (N, 1, k h, k w) float32

1. **Normalize** (``transform.norm``), per image:
   - ``percentile``: (x - p_lo) / (p_hi - p_lo), (p_lo, p_hi) = the (1, 99.8) % percentiles of the
     frame (CSBDeep's ``normalize``; :func:`factory.normalize.percentile_normalize`). Invariant to the
     camera's offset and gain, but tied to the field: a training tile and a whole field of view have
     different percentiles (apply normalizes the whole field once, so that tiles agree);
   - ``camera``: photo-electrons / ``scale_e``: (ADU - offset_adu) gain_e_per_adu / em_gain
     (:func:`factory.normalize.camera_electrons`, each frame's own camera) divided by one fixed
     scale (the training set's median 99.8 % percentile, recorded in the checkpoint). Absolute, so
     the same photons give the same input at any field size, but apply needs the camera's offset
     and gain (``factory calibrate`` measures them).
2. **Upsample** by the integer factor k = HR pixel / LR pixel to the HR grid, bilinear with
   half-pixel centres (``torch.nn.functional.interpolate(..., align_corners=False)``,
   :func:`factory.data.upsample`: the one default of ``factory.data``, ``factory export --format npz``
   and CARE).

**Default: percentile, by measurement** (benchmarks/care_normalization.py: 1024 DDPM pairs of the
shipped model, 600 steps, one seed, whole held-out fields restored and scored by FRC at 1/7):
percentile 110 nm on a mathematical-model field and 121 nm on the held-out strip of the real
STORM image, camera 234 nm and 225 nm, bicubic 249 nm and 236 nm. With the same training the
camera-normalized network had barely left the identity (held-out FRC 234 vs 123 nm).

Training streams raw LR (``DataConfig(normalize=none, upsample=none)``) and calls this function
on every batch; ``factory care apply`` calls it on the user's image (after resampling it to the
model's LR pixel), so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from factory.data import upsample
from factory.errors import FactoryError
from factory.normalize import CAMERA_FIELDS, DEFAULT_PERCENTILES, Upsample, camera_electrons, percentile_normalize


class InputNorm(str, Enum):
    percentile = "percentile"  # per frame (x - p_lo) / (p_hi - p_lo)
    camera = "camera"  # photo-electrons / scale_e


@dataclass(frozen=True)
class InputTransform:
    norm: InputNorm = InputNorm.percentile
    downsample: int = 4  # k: LR -> HR upsampling factor
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES  # percent, for ``percentile``
    scale_e: float = 1.0  # photo-electrons per input unit, for ``camera``

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", InputNorm(self.norm))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        if self.downsample < 1 or not self.scale_e > 0:
            raise FactoryError(f"downsample must be >= 1 and scale_e > 0, got {self.downsample} and {self.scale_e}.")

    def to_dict(self) -> dict:
        return {"norm": self.norm.value, "downsample": self.downsample, "percentiles": list(self.percentiles),
                "scale_e": self.scale_e, "upsample": Upsample.bilinear.value}

    @classmethod
    def from_dict(cls, d: dict) -> "InputTransform":
        return cls(InputNorm(d["norm"]), int(d["downsample"]), tuple(d["percentiles"]), float(d["scale_e"]))


def normalize_lr(lr_adu: np.ndarray, t: InputTransform, camera: dict | None = None) -> np.ndarray:
    """Step 1: (N, h, w) ADU -> (N, h, w) float32; ``camera`` maps each of CAMERA_FIELDS to (N,) values."""
    lr = np.asarray(lr_adu, np.float32)
    if t.norm is InputNorm.percentile:
        return percentile_normalize(lr, t.percentiles)
    if camera is None or any(name not in camera for name in CAMERA_FIELDS):
        raise FactoryError("camera normalization needs the camera's offset_adu, gain_e_per_adu and em_gain.")
    return (camera_electrons(lr, *(camera[name] for name in CAMERA_FIELDS)) / np.float32(t.scale_e)).astype(np.float32)


def model_input(lr_adu: np.ndarray, t: InputTransform, camera: dict | None = None) -> torch.Tensor:
    """Steps 1 and 2: (N, h, w) ADU -> (N, 1, k h, k w) float32 tensor on the HR grid."""
    x = torch.from_numpy(normalize_lr(lr_adu, t, camera))[:, None]  # (N, 1, h, w)
    h, w = x.shape[-2:]
    return upsample(x, (h * t.downsample, w * t.downsample), Upsample.bilinear)  # (N, 1, H, W)
