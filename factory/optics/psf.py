"""The PSF as a separable 1-D kernel, and the linear map that blurs and bins one image axis.

A widefield PSF is well approximated by a Gaussian of

    sigma ~= 0.21 lambda / NA                       (Zhang, Zerubia & Olivo-Marin 2007, Appl. Opt. 46:1819)

Put on the HR grid (pixel p_hr, sigma_px = sigma_nm / p_hr) in one of two ways, both separable
(2-D kernel = outer product of the 1-D one) and both normalized to sum 1:

    gaussian:  g[t] ∝ exp(-t^2 / (2 sigma_px^2))                                   sampled at pixel centres
    erf:       g[t] = 1/2 [erf((t + 1/2) / (sqrt(2) sigma_px)) - erf((t - 1/2) / (sqrt(2) sigma_px))]
                                                                                   integrated over the pixel

for t = -R..R, R = int(4 sigma_px + 0.5) (scipy.ndimage's truncate=4 radius, so the gaussian
model equals ``scipy.ndimage.gaussian_filter(mode="reflect")``).

Blur then sum-bin by k along one axis is one linear map, a (n // k, n) matrix M = B C:
C convolves with g under half-sample symmetric reflection at the borders (``d c b a | a b c d``,
scipy's "reflect"), B sums each run of k pixels. For a symmetric kernel every column of C
sums to 1, so the map conserves flux exactly, borders included: photons that the PSF spreads
past an edge come back in, as if the structure continued mirrored beyond the field of view.
An image is then blurred and binned by two matrix products, LR = M_y @ HR @ M_x^T, which
BLAS runs faster than any convolution routine here (benchmarks/degrade.py).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from factory.optics.params import PsfModel

SIGMA_PER_LAMBDA_OVER_NA = 0.21
TRUNCATE_SIGMAS = 4.0


def sigma_from_na_nm(wavelength_nm: float, na: float) -> float:
    """Gaussian PSF sigma (nm) of a widefield microscope: 0.21 lambda / NA."""
    return SIGMA_PER_LAMBDA_OVER_NA * wavelength_nm / na


def psf_kernel_1d(sigma_px: float, model: PsfModel) -> np.ndarray:
    """The 1-D PSF kernel on the HR grid, (2R + 1,) float64 summing to 1 (see the module docstring)."""
    radius = max(int(TRUNCATE_SIGMAS * sigma_px + 0.5), 1)
    t = np.arange(-radius, radius + 1, dtype=np.float64)  # (2R+1,) HR pixels
    if PsfModel(model) is PsfModel.GAUSSIAN:
        kernel = np.exp(-0.5 * (t / sigma_px) ** 2)
    else:
        edges = (np.arange(-radius, radius + 2) - 0.5) / (math.sqrt(2.0) * sigma_px)  # (2R+2,) pixel edges
        kernel = 0.5 * np.diff([math.erf(e) for e in edges])
    return kernel / kernel.sum()


def reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index into 0..n-1 by half-sample symmetric reflection (period 2n)."""
    index = np.mod(index, 2 * n)
    return np.where(index < n, index, 2 * n - 1 - index)


@lru_cache(maxsize=64)
def blur_bin_matrix(n_hr: int, downsample: int, sigma_px: float, model: PsfModel) -> np.ndarray:
    """(n_hr // k, n_hr) float64 matrix: PSF blur with reflecting borders, then sum-bin by k (k must divide n_hr).

    Every column sums to 1 (flux conservation). Read-only: it is cached and shared.
    """
    kernel = psf_kernel_1d(sigma_px, model)  # (L,)
    radius = (len(kernel) - 1) // 2
    rows = np.arange(n_hr)[:, None]  # (n, 1) HR pixel the light lands on
    cols = reflect_index(rows + np.arange(-radius, radius + 1)[None, :], n_hr)  # (n, L) HR pixel it came from
    flat_index = (rows // downsample) * n_hr + cols  # (n, L) into the (n // k, n) matrix: binning sums rows
    weights = np.broadcast_to(kernel, cols.shape)
    matrix = np.bincount(flat_index.ravel(), weights.ravel(), minlength=n_hr // downsample * n_hr)
    matrix = matrix.reshape(n_hr // downsample, n_hr)  # (n // k, n)
    matrix.flags.writeable = False
    return matrix
