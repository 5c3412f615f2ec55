"""Read microscopy images and cut them into training patches.

Images are (N, H, W) stacks of float32. A 2-D TIFF is a stack of one. Pixel size
(nm) is taken from ImageJ / TIFF resolution metadata when present.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from factory.errors import FactoryError

TIFF_SUFFIXES = (".tif", ".tiff")
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "µm": 1e3, "\\u00B5m": 1e3, "micron": 1e3,
            "micrometer": 1e3, "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "centimeter": 1e7, "inch": 2.54e7}


@dataclass
class ImageStack:
    data: np.ndarray  # (N, H, W)
    pixel_nm: float | None  # None when the file does not say
    path: Path


def _pixel_nm_from_tiff(tif: tifffile.TiffFile) -> float | None:
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    unit = None
    if tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        unit = str(tif.imagej_metadata["unit"]).strip().lower()
    else:
        res_unit = page.tags.get("ResolutionUnit")
        code = int(res_unit.value) if res_unit is not None else 2
        unit = {2: "inch", 3: "cm"}.get(code)
    if unit not in _UNIT_NM or per_unit <= 0 or (unit == "inch" and per_unit in (72.0, 96.0, 300.0)):
        return None  # a screen DPI, not a physical pixel size
    return _UNIT_NM[unit] / per_unit


def read_stack(path: str | Path) -> ImageStack:
    """Read a 2-D image or an (N, H, W) stack from a TIFF file."""
    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"{path}: no such file.")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            photometric = tif.pages[0].photometric
            pixel_nm = _pixel_nm_from_tiff(tif)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise FactoryError(f"{path}: not a readable TIFF ({exc}).") from None
    if photometric == tifffile.PHOTOMETRIC.RGB or (data.ndim == 3 and data.shape[-1] in (3, 4)):
        raise FactoryError(f"{path}: an RGB image of shape {data.shape}; expected a grey 2-D image or an (N, H, W) stack.")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise FactoryError(f"{path}: a {data.ndim}-D array of shape {data.shape}; expected a 2-D image or an (N, H, W) stack.")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise FactoryError(f"{path}: pixel type {data.dtype} is not a real number type.")
    return ImageStack(data.astype(np.float32, copy=False), pixel_nm, path)


def find_tiffs(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a sorted list of TIFF files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in TIFF_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise FactoryError(f"{p}: no such file or folder.")
    if not found:
        raise FactoryError(f"no TIFF files found in {', '.join(map(str, paths))}.")
    return found


def bin_sum(image: np.ndarray, k: int) -> np.ndarray:
    """Sum-bin the last two axes by an integer factor k, cropping the remainder: (..., H, W) -> (..., H//k, W//k)."""
    if k == 1:
        return image
    *lead, H, W = image.shape
    h, w = H // k, W // k
    return image[..., : h * k, : w * k].reshape(*lead, h, k, w, k).sum(axis=(-3, -1))


def extract_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size x size windows of a 2-D image at the given stride: (H, W) -> (P, size, size), a copy."""
    H, W = image.shape
    if size > H or size > W:
        raise FactoryError(f"patch size {size} is larger than the image ({H}x{W}).")
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))  # (H-s+1, W-s+1, s, s)
    return np.ascontiguousarray(windows[::stride, ::stride].reshape(-1, size, size))


def dihedral8(x: np.ndarray) -> np.ndarray:
    """The 8 flips/rotations of the last two axes (square images): (..., S, S) -> (8, ..., S, S)."""
    rots = [np.rot90(x, k, axes=(-2, -1)) for k in range(4)]
    return np.stack(rots + [np.flip(r, axis=-1) for r in rots])


def normalize_unit(image: np.ndarray, percentile: float = 99.9) -> tuple[np.ndarray, float]:
    """Scale so that the given percentile maps to 1 and clip to [0, 1]; returns (image, scale)."""
    scale = float(np.percentile(image, percentile))
    if scale <= 0:
        scale = float(image.max()) or 1.0
    return np.clip(image / scale, 0.0, 1.0).astype(np.float32), scale


def write_tiff(path: str | Path, data: np.ndarray, pixel_nm: float | None, overwrite: bool = False) -> None:
    """Write a 2-D image or (N, H, W) stack as an ImageJ TIFF with the pixel size (Fiji reads it)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FactoryError(f"{path} already exists; pass --overwrite to replace it.")
    kwargs = {}
    if pixel_nm:
        kwargs = {"resolution": (1e3 / pixel_nm, 1e3 / pixel_nm), "metadata": {"unit": "um", "axes": "YX" if data.ndim == 2 else "ZYX"}}
    try:
        tmp = path.with_name(path.name + ".tmp")
        tifffile.imwrite(tmp, data, imagej=data.dtype != np.float64, **kwargs)
        tmp.replace(path)
    except OSError as exc:
        raise FactoryError(f"cannot write {path}: {exc.strerror or exc}.") from None
