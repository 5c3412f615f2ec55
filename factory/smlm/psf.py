"""The pixel-integrated Gaussian PSF at continuous positions, its derivatives, and spot rendering.

Coordinates (every grid in ``factory.smlm``): x runs along columns, y along rows, both in nm
from the top-left corner of the grid; pixel (r, c) of a grid of pitch p covers
x in [c p, (c+1) p) and y in [r p, (r+1) p).

The fraction of a unit-mass 2-D Gaussian of standard deviation sigma centred at (x0, y0) that
falls in pixel (r, c) is separable, P_rc = P_r(y0) P_c(x0), with (Smith et al. 2010, Nat.
Methods 7:373, eq. 3-4):

    P_c(x0)      = 1/2 [erf(((c+1) p - x0) / (sqrt 2 sigma)) - erf((c p - x0) / (sqrt 2 sigma))]
    dP_c / dx0   = phi(c p - x0) - phi((c+1) p - x0),      phi(u) = exp(-u^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)

evaluated exactly at each emitter's position: no rounding to any grid. Light falling outside
the grid is lost (a camera does not see it), so a spot near an edge sums to less than 1.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

SQRT2 = math.sqrt(2.0)


def pixel_fractions(pos_nm: np.ndarray, n_px: int, pixel_nm: float, sigma_nm: float,
                    dtype: type = np.float64) -> np.ndarray:
    """(n, n_px) fraction of each unit-mass 1-D Gaussian (centre pos_nm, (n,)) in each pixel."""
    edges = np.arange(n_px + 1, dtype=dtype) * dtype(pixel_nm)  # (n_px + 1,) nm
    z = (edges[None, :] - np.asarray(pos_nm, dtype=dtype)[:, None]) * dtype(1.0 / (SQRT2 * sigma_nm))  # (n, n_px + 1)
    cdf = erf(z)  # (n, n_px + 1)
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1])


def pixel_fractions_grad(pos_nm: np.ndarray, n_px: int, pixel_nm: float,
                         sigma_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, dP/dpos), each (n, n_px) float64: fractions and their derivative per nm of the centre."""
    edges = np.arange(n_px + 1) * float(pixel_nm)  # (n_px + 1,) nm
    u = edges[None, :] - np.asarray(pos_nm, dtype=np.float64)[:, None]  # (n, n_px + 1) nm
    cdf = erf(u / (SQRT2 * sigma_nm))
    pdf = np.exp(-0.5 * (u / sigma_nm) ** 2) / (math.sqrt(2.0 * math.pi) * sigma_nm)  # (n, n_px + 1) per nm
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1]), pdf[:, :-1] - pdf[:, 1:]


def render_spots(x_nm: np.ndarray, y_nm: np.ndarray, weights: np.ndarray, frame: np.ndarray, n_frames: int,
                 shape: tuple[int, int], pixel_nm: float, sigma_nm: float, dtype: type = np.float64) -> np.ndarray:
    """(n_frames, H, W): per frame, sum over its rows of weight x the pixel-integrated Gaussian.

    x_nm, y_nm, weights, frame: (R,) one row per spot; frame in 0..n_frames-1. Each frame is one
    matrix product, image_f = (P_y * w)^T @ P_x over that frame's rows.
    """
    height, width = shape
    out = np.zeros((n_frames, height, width), dtype=dtype)  # (F, H, W)
    frame = np.asarray(frame, dtype=np.int64)
    if frame.size == 0:
        return out
    order = np.argsort(frame, kind="stable")  # (R,) rows grouped by frame
    bounds = np.searchsorted(frame[order], np.arange(n_frames + 1))  # (F + 1,) row ranges
    x_nm, y_nm = np.asarray(x_nm)[order], np.asarray(y_nm)[order]
    weights = np.asarray(weights, dtype=dtype)[order]
    for f in np.flatnonzero(np.diff(bounds)):
        rows = slice(bounds[f], bounds[f + 1])
        p_x = pixel_fractions(x_nm[rows], width, pixel_nm, sigma_nm, dtype)  # (n_f, W)
        p_y = pixel_fractions(y_nm[rows], height, pixel_nm, sigma_nm, dtype)  # (n_f, H)
        np.matmul((p_y * weights[rows, None]).T, p_x, out=out[f])  # (H, W)
    return out
