"""Labels from an HR density: an inhomogeneous Poisson point process at continuous positions.

The HR image rho (H, W) >= 0 on pixels of p nm defines a piecewise-constant intensity

    lambda(x) = labels_per_um2 * rho(x) / mean(rho)          labels per um^2,

so the field holds labels_per_um2 labels per um^2 on average wherever the structure has its
mean density, twice that where it is twice as dense, and none where rho = 0. For a piecewise
constant intensity the process is exactly: the count in pixel (r, c) is Poisson with mean
lambda_rc p^2 / 10^6, independently per pixel, and each label lies uniformly inside its pixel
(Illian et al. 2008, Statistical Analysis and Modelling of Spatial Point Patterns, sec. 2.4;
ThunderSTORM's data generator places molecules the same way). Negative densities count as 0.

Coordinates: x along columns, y along rows, nm from the top-left corner of the HR field;
HR pixel (r, c) covers x in [c p, (c+1) p), y in [r p, (r+1) p).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.errors import FactoryError

NM2_PER_UM2 = 1e6


@dataclass(frozen=True)
class Labels:
    """Label positions, each (n,) float64 nm (module docstring for the coordinates)."""

    x_nm: np.ndarray
    y_nm: np.ndarray

    def __len__(self) -> int:
        return len(self.x_nm)


def check_density(hr: np.ndarray) -> np.ndarray:
    """The HR density as (H, W) float64 with negatives set to 0; one sentence for a bad image."""
    hr = np.asarray(hr)
    if hr.ndim != 2:
        raise FactoryError(f"the HR density must be one (H, W) image, got shape {hr.shape}.")
    if not np.issubdtype(hr.dtype, np.number) or np.issubdtype(hr.dtype, np.complexfloating):
        raise FactoryError(f"the HR density must hold real numbers, got {hr.dtype}.")
    density = np.maximum(hr.astype(np.float64), 0.0)  # (H, W)
    if not np.isfinite(density).all():
        raise FactoryError("the HR density contains NaN or infinite values.")
    return density


def label_intensity(hr: np.ndarray, hr_pixel_nm: float, labels_per_um2: float) -> np.ndarray:
    """(H, W) float64 expected labels per HR pixel: labels_per_um2 rho / mean(rho) p^2 / 10^6."""
    density = check_density(hr)
    mean = density.mean()
    if mean == 0.0:
        return np.zeros_like(density)
    return density * (labels_per_um2 * hr_pixel_nm**2 / NM2_PER_UM2 / mean)


def draw_labels(hr: np.ndarray, hr_pixel_nm: float, labels_per_um2: float, rng: np.random.Generator) -> Labels:
    """One realization of the point process (module docstring); labels in row-major pixel order.

    Draws: one Poisson number per HR pixel, then two uniforms per label (x, then y offsets).
    """
    expected = label_intensity(hr, hr_pixel_nm, labels_per_um2)  # (H, W) labels per pixel
    counts = rng.poisson(expected)  # (H, W)
    pixel = np.repeat(np.arange(counts.size), counts.ravel())  # (n,) flat HR pixel of each label
    row, col = np.divmod(pixel, counts.shape[1])  # (n,), (n,)
    offsets = rng.random((2, pixel.size))  # (2, n) position inside the pixel, in pixels
    return Labels(x_nm=_inside(col, offsets[0], hr_pixel_nm), y_nm=_inside(row, offsets[1], hr_pixel_nm))


def _inside(index: np.ndarray, offset: np.ndarray, pixel_nm: float) -> np.ndarray:
    """(index + offset) p, kept below (index + 1) p where float rounding would reach the next pixel."""
    return np.minimum((index + offset) * pixel_nm, np.nextafter((index + 1) * pixel_nm, -np.inf))
