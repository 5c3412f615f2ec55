"""Score a restored image against a reference of the same field: shift, FRC resolution, Pearson r.

    score = evaluate_files("restored.tif", "sr.tif", EvaluateConfig(tiles=4))
    score.frc_nm, score.frc_px, score.pearson_r, score.shift_px, score.tiles

Steps (``factory evaluate``):

1. **One pixel grid.** Pixel sizes come from the TIFFs or the config. Equal sizes (within 1 %)
   are used as they are; when one is an integer multiple m of the other (within 1 %), the finer
   image is sum-binned by m (:func:`factory.images.bin_sum`, as an SR reference is rendered
   finer than a restoration); other ratios are refused in one sentence. The two images must then
   cover one field: sides may differ only by the binning remainder (< m px), and both are cropped
   to the common top-left region.
2. **Registration** (:mod:`factory.metrics.register`): the sub-pixel shift of the restored image
   relative to the reference, removed, both cropped to the common region. A shift of a fraction
   of a pixel already lowers the FRC at high frequencies (the cross-spectrum gets a phase ramp).
3. **FRC** at the fixed 1/7 threshold (:mod:`factory.metrics.frc`), in px and nm, and the Pearson
   correlation of the registered pixels; with ``tiles`` = n also per tile of an n x n grid of the
   common region (tiles of at least 32 px).

A restored image and its reference are not two noisy copies of one signal, so this FRC is not
the half-bit-free "resolution" of a single acquisition: it is the finest scale at which the
restoration still agrees with the reference, the score used by Saguy et al. 2023 for CARE.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from factory import images
from factory.errors import FactoryError
from factory.metrics.frc import THRESHOLD, frc_curve
from factory.metrics.register import register

PIXEL_TOLERANCE = 0.01  # relative: pixel sizes this close are equal; ratios this close to an integer are integers
MIN_TILE_PX = 32


@dataclass(frozen=True)
class EvaluateConfig:
    tiles: int = 1  # n: also score each tile of an n x n grid (1 = whole image only)
    pixel_nm: float | None = None  # restored image's pixel size, nm (None: from its TIFF)
    reference_pixel_nm: float | None = None  # reference's pixel size, nm (None: from its TIFF, else the restored one's)
    register: bool = True  # estimate and remove the sub-pixel shift (False: assume the grids are aligned)
    threshold: float = THRESHOLD


@dataclass
class TileScore:
    row: int
    col: int
    frc_px: float | None
    frc_nm: float | None
    pearson_r: float


@dataclass
class Score:
    """FRC resolution (px, nm; None when the FRC stays above the threshold up to Nyquist), Pearson r,
    the shift removed (px of the scored grid, restored relative to reference), the grid used."""

    frc_px: float | None
    frc_nm: float | None
    pearson_r: float
    shift_px: tuple[float, float]
    pixel_nm: float | None
    shape: tuple[int, int]  # common region scored, px
    reference_binned_by: int = 1
    restored_binned_by: int = 1
    tiles: list[TileScore] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shift_px"] = [round(v, 4) for v in self.shift_px]
        d["shape"] = list(self.shape)
        return d


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels (0 when either is constant)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def _integer_ratio(ratio: float) -> int | None:
    m = round(ratio)
    return m if m >= 1 and abs(ratio - m) <= PIXEL_TOLERANCE * m else None


def common_grid(restored: np.ndarray, restored_nm: float | None, reference: np.ndarray,
                reference_nm: float | None) -> tuple[np.ndarray, np.ndarray, float | None, int, int]:
    """Both images on one pixel grid (see step 1): (restored, reference, pixel_nm, restored bin, reference bin)."""
    bin_restored = bin_reference = 1
    if restored_nm is not None and reference_nm is not None:
        if reference_nm <= restored_nm:
            bin_reference = _integer_ratio(restored_nm / reference_nm) or 0
        else:
            bin_restored = _integer_ratio(reference_nm / restored_nm) or 0
        if not (bin_reference and bin_restored):
            raise FactoryError(f"the restored image has {restored_nm:g} nm pixels and the reference {reference_nm:g} nm, "
                               f"not an integer ratio; resample one to the other's pixel size (or a multiple of it) first.")
    a = images.bin_sum(restored, bin_restored)
    b = images.bin_sum(reference, bin_reference)
    slack = max(bin_restored, bin_reference)
    if any(abs(x - y) >= slack for x, y in zip(a.shape, b.shape)):
        grid = f" after binning to {max(restored_nm or 0, reference_nm or 0):g} nm pixels" if slack > 1 else ""
        raise FactoryError(f"the restored image is {a.shape[0]}x{a.shape[1]} px and the reference {b.shape[0]}x{b.shape[1]} px{grid}: "
                           f"they do not cover the same field.")
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    pixel_nm = None if restored_nm is None else restored_nm * bin_restored
    return a[:h, :w], b[:h, :w], pixel_nm, bin_restored, bin_reference


def _frc(a: np.ndarray, b: np.ndarray, pixel_nm: float | None, threshold: float) -> tuple[float | None, float | None]:
    px = frc_curve(a, b).resolution_px(threshold)
    return px, (None if px is None or pixel_nm is None else px * pixel_nm)


def score(restored: np.ndarray, reference: np.ndarray, pixel_nm: float | None, cfg: EvaluateConfig = EvaluateConfig()) -> Score:
    """Register, then FRC and Pearson r of two 2-D images already on one grid (pixel ``pixel_nm``)."""
    if cfg.tiles < 1:
        raise FactoryError(f"--tiles must be >= 1, got {cfg.tiles}.")
    reg = register(restored, reference, estimate=cfg.register)
    h, w = reg.reference.shape
    if min(h, w) // cfg.tiles < MIN_TILE_PX:
        raise FactoryError(f"--tiles {cfg.tiles} would cut the {h}x{w} px common region into tiles under {MIN_TILE_PX} px; use fewer tiles.")
    frc_px, frc_nm = _frc(reg.moving, reg.reference, pixel_nm, cfg.threshold)
    result = Score(frc_px, frc_nm, pearson_r(reg.moving, reg.reference), reg.shift_px, pixel_nm, (h, w))
    if cfg.tiles > 1:
        ys = np.linspace(0, h, cfg.tiles + 1).astype(int)
        xs = np.linspace(0, w, cfg.tiles + 1).astype(int)
        for i in range(cfg.tiles):
            for j in range(cfg.tiles):
                a = reg.moving[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
                b = reg.reference[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
                result.tiles.append(TileScore(i, j, *_frc(a, b, pixel_nm, cfg.threshold), pearson_r(a, b)))
    return result


def read_2d(path: str | Path, what: str) -> images.ImageStack:
    """A 2-D image (a stack of one frame is accepted); a stack of several frames is refused in one sentence."""
    stack = images.read_stack(path)
    if stack.data.shape[0] != 1:
        raise FactoryError(f"{path}: a stack of {stack.data.shape[0]} frames; {what} must be one 2-D image.")
    return stack


def evaluate_files(restored_path: str | Path, reference_path: str | Path, cfg: EvaluateConfig = EvaluateConfig()) -> Score:
    """Read both TIFFs, bring them onto one grid, and :func:`score` them."""
    for name in ("pixel_nm", "reference_pixel_nm"):
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise FactoryError(f"--{name.replace('_', '-')} must be > 0 nm, got {value}.")
    restored = read_2d(restored_path, "the restored image")
    reference = read_2d(reference_path, "the reference")
    restored_nm = cfg.pixel_nm or restored.pixel_nm
    reference_nm = cfg.reference_pixel_nm or reference.pixel_nm
    if restored_nm is None and reference_nm is not None and restored.data.shape == reference.data.shape:
        restored_nm = reference_nm  # one grid: the shapes agree and one size is known
    if reference_nm is None:
        if restored.data.shape[1:] != reference.data.shape[1:]:
            raise FactoryError(f"{reference_path} records no pixel size and its shape differs from {restored_path}; "
                               f"pass --reference-pixel-nm.")
        reference_nm = restored_nm
    a, b, pixel_nm, bin_a, bin_b = common_grid(restored.data[0], restored_nm, reference.data[0], reference_nm)
    result = score(a, b, pixel_nm, cfg)
    result.restored_binned_by, result.reference_binned_by = bin_a, bin_b
    return result
