"""Restore a real widefield image with a trained CARE model (``factory care apply``).

1. **Resample** the frame to the LR pixel the model was trained on (``model.lr_pixel_nm``), when
   the camera pixel differs by more than 1 %: bilinear (``skimage.transform.rescale``, order 1,
   anti-aliased when shrinking), with the signal above the offset scaled by the pixel-area ratio so
   that photo-electrons per pixel mean what they meant in training.
2. **Normalize and upsample** with :func:`factory.care.transform.model_input`, the function
   training used, on the whole field at once (so that tiles share one normalization).
3. **Predict** the whole field (``tile=None``), or tiles of ``tile`` HR px overlapping by
   ``overlap`` px, blended: along each axis a tile's weight is 0 on the outer quarter of an overlap,
   rises linearly over the middle half and is 1 inside; the weights of neighbouring tiles sum to 1.
   So each output pixel comes from tiles at least ``overlap / 4`` px away from their cut edges;
   with overlap / 4 >= the network's receptive radius (26 px at depth 2,
   :func:`factory.care.network.receptive_radius`), tiled and whole-field outputs agree up to
   floating-point summation order (tests/test_care.py), and smaller overlaps differ only
   within reach of a cut: with a trained depth-2 model on a 512 px field, 256 px tiles differed
   from the whole field by at most 6e-3 (overlap 32), 2e-5 (64, the default) and 0 (112) of the
   image's 99.9th percentile, at the speed of the whole field (0.6 s on 2 CPU cores). In both modes the field is first extended by the receptive radius of
   symmetric reflection on every side (so its border pixels see the same surroundings either way),
   then padded to whole tiles (and to a multiple of 2**depth) and cropped back.
4. **Write** a float32 TIFF (normalized density) with the HR pixel size (``model.hr_pixel_nm``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from factory import images
from factory.care.checkpoint import CareModel
from factory.care.network import receptive_radius
from factory.care.transform import InputNorm, model_input
from factory.device import pick_device
from factory.errors import FactoryError


@dataclass(frozen=True)
class ApplyConfig:
    tile: int | None = 256  # HR px per tile side; None: the whole field in one pass
    overlap: int = 64  # HR px shared by neighbouring tiles
    pixel_nm: float | None = None  # the input's pixel, nm (None: from its TIFF)
    camera: dict | None = None  # offset_adu, gain_e_per_adu, em_gain (needed by camera-normalized models)
    batch: int = 4  # tiles per forward pass
    device: str = "auto"


def resample(frame: np.ndarray, pixel_nm: float, target_nm: float, offset_adu: float = 0.0) -> np.ndarray:
    """(h, w) ADU on a ``pixel_nm`` grid -> the ``target_nm`` grid (step 1); unchanged within 1 %."""
    scale = pixel_nm / target_nm  # output px per input px
    if abs(scale - 1.0) <= 0.01:
        return frame
    from skimage.transform import rescale

    above = np.asarray(frame, np.float64) - offset_adu
    out = rescale(above, scale, order=1, mode="edge", anti_aliasing=scale < 1, preserve_range=True)
    return out / scale**2 + offset_adu  # signal per pixel scales with its area


def prepare(frame: np.ndarray, pixel_nm: float, model: CareModel, camera: dict | None = None) -> torch.Tensor:
    """Steps 1-2: (h, w) ADU -> (1, 1, H, W) network input on the model's HR grid."""
    if model.transform.norm is InputNorm.camera and camera is None:
        raise FactoryError("this model was trained with camera normalization: give the camera's offset and gain "
                           "(--offset-adu and --gain-e-per-adu, or --optics optics.toml from `factory calibrate`).")
    if camera is not None:
        camera = {k: np.asarray([float(np.ravel(camera.get(k, 1.0))[0])]) for k in ("offset_adu", "gain_e_per_adu", "em_gain")}
    offset = float(camera["offset_adu"][0]) if camera else 0.0
    lr = resample(frame, pixel_nm, model.lr_pixel_nm, offset)
    return model_input(lr[None], model.transform, camera)


def _weights(n_tiles: int, i: int, tile: int, overlap: int) -> np.ndarray:
    """(tile,) blending weight of tile i of n along one axis (see step 3)."""
    w = np.ones(tile)
    q, half = overlap // 4, overlap // 2
    ramp = (np.arange(half) + 0.5) / half  # rises from 0 to 1 across the middle half of the overlap
    if i > 0:
        w[:q], w[q:q + half] = 0.0, ramp
    if i < n_tiles - 1:
        w[tile - q:], w[tile - q - half:tile - q] = 0.0, ramp[::-1]
    return w


@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, multiple: int, halo: int, tile: int | None, overlap: int,
            batch: int = 4, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Step 3: (1, 1, H, W) input -> (H, W) float32 prediction, whole or tiled. The field is first
    extended by ``halo`` px of symmetric reflection on every side (the receptive radius): the border
    pixels then see the same reflected surroundings in both modes, instead of the network's zero
    padding in one and a tile's reflection in the other (at the field's edge they differed by up to
    0.68 x the image's 99.9th percentile before, with a trained model)."""
    H, W = x.shape[-2:]
    halo += -halo % multiple  # keeps the pooling grid where it was
    img = np.pad(x[0, 0].numpy(), halo, mode="symmetric")  # (H + 2 halo, W + 2 halo)
    h_in, w_in = img.shape
    if tile is None or (tile >= h_in and tile >= w_in):
        padded = np.pad(img, ((0, -h_in % multiple), (0, -w_in % multiple)), mode="symmetric")
        out = net(torch.from_numpy(padded)[None, None].to(device)).float().cpu()[0, 0].numpy()
        return out[halo:halo + H, halo:halo + W].astype(np.float32)
    if tile % multiple or overlap % multiple or not 0 <= overlap < tile:
        raise FactoryError(f"--tile ({tile}) and --overlap ({overlap}) must be multiples of {multiple} HR px with overlap < tile.")
    stride = tile - overlap
    ny, nx = (max(1, math.ceil((n - tile) / stride) + 1) for n in (h_in, w_in))
    padded = np.pad(img, ((0, (ny - 1) * stride + tile - h_in), (0, (nx - 1) * stride + tile - w_in)), mode="symmetric")
    acc = np.zeros(padded.shape)
    weight = np.zeros(padded.shape)
    origins = [(i, j) for i in range(ny) for j in range(nx)]
    for start in range(0, len(origins), batch):
        chunk = origins[start:start + batch]
        tiles = np.stack([padded[i * stride:i * stride + tile, j * stride:j * stride + tile] for i, j in chunk])
        preds = net(torch.from_numpy(tiles)[:, None].to(device)).float().cpu()[:, 0].numpy()  # (b, tile, tile)
        for (i, j), pred in zip(chunk, preds):
            w = np.outer(_weights(ny, i, tile, overlap), _weights(nx, j, tile, overlap))
            acc[i * stride:i * stride + tile, j * stride:j * stride + tile] += w * pred
            weight[i * stride:i * stride + tile, j * stride:j * stride + tile] += w
    return (acc / weight)[halo:halo + H, halo:halo + W].astype(np.float32)


def restore(frame: np.ndarray, pixel_nm: float, model: CareModel, cfg: ApplyConfig = ApplyConfig()) -> np.ndarray:
    """Steps 1-3 for one (h, w) frame in ADU -> (H, W) float32 on the model's HR grid."""
    if frame.ndim != 2:
        raise FactoryError(f"CARE restores one 2-D image at a time, got an array of shape {frame.shape}.")
    device = pick_device(cfg.device)
    x = prepare(frame, pixel_nm, model, cfg.camera)  # (1, 1, H, W)
    model.net.to(device)
    return predict(model.net, x, model.network.multiple, receptive_radius(model.network), cfg.tile, cfg.overlap, cfg.batch, device)


def apply_file(path: str | Path, model: CareModel, out: str | Path, cfg: ApplyConfig = ApplyConfig(),
               overwrite: bool = False) -> tuple[np.ndarray, float]:
    """Read a 2-D TIFF, restore it, write ``out`` with the HR pixel size; returns (image, hr_pixel_nm)."""
    stack = images.read_stack(path)
    if stack.data.shape[0] != 1:
        raise FactoryError(f"{path}: a 3-D stack of {stack.data.shape[0]} frames; `care apply` needs one 2-D image "
                           f"(average the frames or pick one first).")
    pixel_nm = cfg.pixel_nm or stack.pixel_nm
    if pixel_nm is None:
        raise FactoryError(f"{path} records no pixel size; pass --pixel-nm (the model expects {model.lr_pixel_nm:g} nm pixels).")
    if not pixel_nm > 0:
        raise FactoryError(f"--pixel-nm must be > 0 nm, got {pixel_nm}.")
    ratio = pixel_nm / model.lr_pixel_nm
    if not 0.25 <= ratio <= 4.0:
        raise FactoryError(f"{path} has {pixel_nm:g} nm pixels, {ratio:.2g} x the {model.lr_pixel_nm:g} nm the model was "
                           f"trained on; resampling that far would invent or discard detail (train on a matching store).")
    restored = restore(stack.data[0], pixel_nm, model, cfg)
    images.write_tiff(out, restored, model.hr_pixel_nm, overwrite=overwrite)
    return restored, model.hr_pixel_nm
