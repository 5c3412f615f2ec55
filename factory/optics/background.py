"""Background photons per LR pixel: a constant mean with smooth, positive spatial structure.

Out-of-focus light and autofluorescence vary slowly across a field of view. The model:

    b(x) = b_mean * g(x) / mean_x g(x),     g = exp(v f),

with ``b_mean = background_photons`` (so the image mean is exactly b_mean), ``v =
background_variation`` (the relative std of b is sqrt(exp(v^2) - 1) ~ v for small v; 0 gives
a flat background) and f a zero-mean, unit-variance Gaussian random field with Gaussian
autocorrelation exp(-d^2 / (2 s^2)), s = ``background_sigma_nm``. f is a sum of Gaussian
bumps of width s / sqrt(2) placed on a lattice of the same spacing with N(0, 1) weights:

    f(y, x) = sum_ab z_ab phi(y - y_a) phi(x - x_b) / norm,      i.e.  f = P_y Z P_x^T,

separable and cheap (a few dozen random numbers per image, no FFT, no periodic wrap).
Correlation lengths below one LR pixel are treated as 1/sqrt(2) pixel (white noise at the
pixel scale, and a bounded number of lattice points). The weights come from ``default_rng(background_seed)``: the field is a function of the
params alone, so the noise-free expectation is reproducible from a manifest row.
"""
from __future__ import annotations

import math

import numpy as np

from factory.optics.params import DegradationParams


def _bump_matrix(n_px: int, width_px: float) -> np.ndarray:
    """(n_px, m) weights of m lattice bumps (spacing = width) at each pixel; rows have unit L2 norm."""
    margin = 4.0 * width_px
    centres = np.arange(-margin, n_px - 1 + margin + width_px, width_px)  # (m,) lattice, px
    d = np.arange(n_px)[:, None] - centres[None, :]  # (n, m) px
    bumps = np.exp(-0.5 * (d / width_px) ** 2)
    return bumps / np.linalg.norm(bumps, axis=1, keepdims=True)


def background_photons(params: DegradationParams, shape: tuple[int, int, int], lr_pixel_nm: float) -> np.ndarray:
    """Background photons per LR pixel for a batch, (N, h, w) float64 (a (1, 1, 1) constant when flat)."""
    mean = params.background_photons
    if params.background_variation == 0.0 or mean == 0.0:
        return np.full((1, 1, 1), mean)
    n, h, w = shape
    width_px = max(params.background_sigma_nm / lr_pixel_nm, 1.0) / math.sqrt(2.0)
    p_y, p_x = _bump_matrix(h, width_px), _bump_matrix(w, width_px)  # (h, my), (w, mx)
    z = np.random.default_rng(params.background_seed).standard_normal((n, p_y.shape[1], p_x.shape[1]))  # (N, my, mx)
    field = p_y @ z @ p_x.T  # (N, h, w) unit-variance Gaussian field
    g = np.exp(params.background_variation * field)
    return mean * g / g.mean(axis=(1, 2), keepdims=True)
