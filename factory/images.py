"""Read microscopy images and cut them into training patches.

Images are (N, H, W) stacks of float32. A 2-D TIFF is a stack of one. Pixel size
(nm) is taken from ImageJ / TIFF resolution metadata when present.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from factory.errors import FactoryError
from factory.files import atomic_write

TIFF_SUFFIXES = (".tif", ".tiff")
TRAINING_SUFFIXES = TIFF_SUFFIXES + (".csv",)  # TIFF images and SMLM localization tables
# Length units as ImageJ writes them in its description (lower-cased; "\\u00b5m" is ImageJ's escaped µm).
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "\\u00b5m": 1e3,
            "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometers": 1e3, "mm": 1e6, "millimeter": 1e6,
            "cm": 1e7, "centimeter": 1e7, "inch": 2.54e7}
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)  # what ImageJ reads; others are written as plain TIFF


@dataclass
class ImageStack:
    data: np.ndarray  # (N, H, W)
    pixel_nm: float | None  # None when the file does not say
    path: Path


def _pixel_nm_from_tiff(tif: tifffile.TiffFile) -> float | None:
    """Pixel size in nm from XResolution (pixels per unit) and the unit: ImageJ's ``unit`` when the
    file is an ImageJ TIFF, else the TIFF ResolutionUnit (2 inch, 3 cm; 1 "none" -> unknown).

    Placeholders are not sizes: tifffile's default 1 pixel/inch-or-cm and screen DPIs (72, 96, 300/inch).
    """
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    if tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        unit = str(tif.imagej_metadata["unit"]).strip().lower()
    else:
        res_unit = page.tags.get("ResolutionUnit")
        code = int(res_unit.value) if res_unit is not None else 2  # TIFF 6.0: inch when absent
        unit = {2: "inch", 3: "cm"}.get(code)
        if per_unit == 1.0:
            return None  # the writer's placeholder, not 1 cm or 1 inch pixels
    if unit not in _UNIT_NM or per_unit <= 0 or (unit == "inch" and per_unit in (72.0, 96.0, 300.0)):
        return None  # no length unit, or a screen DPI rather than a physical pixel size
    return _UNIT_NM[unit] / per_unit


def read_stack(path: str | Path) -> ImageStack:
    """Read a grey 2-D image or an (N, H, W) stack from a TIFF file; RGB, multi-sample and 4-D+ files are refused."""
    path = Path(path)
    if path.is_dir():
        raise FactoryError(f"{path} is a folder; expected a TIFF file.")
    if not path.is_file():
        raise FactoryError(f"{path}: no such file.")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            photometric, samples = page.photometric, page.samplesperpixel
            data = tif.asarray()
            pixel_nm = _pixel_nm_from_tiff(tif)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise FactoryError(f"{path}: not a readable TIFF ({exc}).") from None
    if photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.PALETTE, tifffile.PHOTOMETRIC.YCBCR) \
            or (data.ndim == 3 and data.shape[-1] in (3, 4) and samples > 1):
        raise FactoryError(f"{path}: a colour (RGB) image of shape {data.shape}; expected a grey 2-D image or an (N, H, W) stack.")
    if samples > 1:
        raise FactoryError(f"{path}: {samples} samples per pixel (shape {data.shape}); expected a grey 2-D image or an (N, H, W) stack.")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise FactoryError(f"{path}: a {data.ndim}-D array of shape {data.shape}; expected a 2-D image or an (N, H, W) stack.")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise FactoryError(f"{path}: pixel type {data.dtype} is not a real number type.")
    if 0 in data.shape:
        raise FactoryError(f"{path}: an empty image of shape {data.shape}.")
    return ImageStack(data.astype(np.float32, copy=False), pixel_nm, path)


def _expand(paths: list[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files as given, folders (non-recursive) expanded to their files with these suffixes, sorted by name."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes)
        elif p.exists():
            found.append(p)
        else:
            raise FactoryError(f"{p}: no such file or folder.")
    return found


def find_tiffs(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a sorted list of TIFF files."""
    found = _expand(paths, TIFF_SUFFIXES)
    if not found:
        raise FactoryError(f"no TIFF files found in {', '.join(map(str, paths))}.")
    return found


def find_training_files(paths: list[str | Path]) -> list[Path]:
    """Like :func:`find_tiffs`, but folders also yield SMLM localization tables (``.csv``); read each
    with :func:`factory.render.load_training_image`."""
    found = _expand(paths, TRAINING_SUFFIXES)
    if not found:
        raise FactoryError(f"no TIFF or localization (.csv) files found in {', '.join(map(str, paths))}.")
    return found


def binning_factor(target_nm: float, source_nm: float, what) -> int:
    """The integer k that sum-binning by turns ``source_nm`` pixels into ``target_nm`` ones, else one sentence."""
    if not source_nm > 0 or not target_nm > 0:
        raise FactoryError(f"{what}: pixel sizes must be > 0 nm, got {source_nm:g} and {target_nm:g}.")
    k = target_nm / source_nm
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise FactoryError(f"{what}: the target pixel ({target_nm:g} nm) is not an integer multiple of its pixel size "
                           f"{source_nm:g} nm.")
    return int(round(k))


def bin_sum(image: np.ndarray, k: int) -> np.ndarray:
    """Sum-bin the last two axes by an integer factor k, cropping the remainder: (..., H, W) -> (..., H//k, W//k)."""
    *lead, H, W = image.shape
    if k < 1 or k > min(H, W):
        raise FactoryError(f"binning factor {k} must be between 1 and the image side ({H}x{W}).")
    if k == 1:
        return image
    h, w = H // k, W // k
    return image[..., : h * k, : w * k].reshape(*lead, h, k, w, k).sum(axis=(-3, -1))


def extract_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size x size windows of a 2-D image at the given stride: (H, W) -> (P, size, size), a copy."""
    H, W = image.shape
    if stride < 1 or size < 1:
        raise FactoryError(f"patch size {size} and stride {stride} must be at least 1.")
    if size > H or size > W:
        raise FactoryError(f"patch size {size} is larger than the image ({H}x{W}).")
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))  # (H-s+1, W-s+1, s, s)
    return windows[::stride, ::stride].copy().reshape(-1, size, size)  # a writable copy, even for one window


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
    """Write a 2-D image or (N, H, W) stack with the pixel size, atomically (temp file, then rename).

    uint8/uint16/int16/float32 go out as ImageJ TIFF (``unit=um`` + XResolution, what Fiji reads); other
    types as plain TIFF with XResolution in pixels per cm (ResolutionUnit 3). :func:`read_stack` reads both.
    """
    _write(Path(path), data, data.shape, data.dtype, pixel_nm, overwrite)


def write_tiff_frames(path: str | Path, frames: Iterable[np.ndarray], shape: tuple[int, int, int], dtype: np.dtype | type,
                      pixel_nm: float | None, overwrite: bool = False) -> None:
    """Like :func:`write_tiff` for an (N, H, W) stack given as N frames of (H, W), written as they come
    (memory flat in N)."""
    _write(Path(path), frames, tuple(shape), np.dtype(dtype), pixel_nm, overwrite)


def _write(path: Path, data, shape: tuple[int, ...], dtype: np.dtype, pixel_nm: float | None, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FactoryError(f"{path} already exists; pass --overwrite to replace it.")
    imagej = dtype in _IMAGEJ_DTYPES
    kwargs: dict = {}
    if pixel_nm:
        if imagej:
            kwargs = {"resolution": (1e3 / pixel_nm, 1e3 / pixel_nm), "metadata": {"unit": "um", "axes": "YX" if len(shape) == 2 else "ZYX"}}
        else:
            kwargs = {"resolution": (1e7 / pixel_nm, 1e7 / pixel_nm), "resolutionunit": tifffile.RESUNIT.CENTIMETER}
    with atomic_write(path) as tmp:  # photometric: a (3|4, H, W) stack is N grey images, not RGB
        tifffile.imwrite(tmp, data, shape=shape, dtype=dtype, imagej=imagej, photometric="minisblack", **kwargs)
