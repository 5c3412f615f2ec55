"""The pixel-integrated Gaussian PSF at continuous positions, its derivatives, and spot rendering.

Coordinates (every grid in ``factory.smlm``): x runs along columns, y along rows, both in nm
from the top-left corner of the grid; pixel (r, c) of a grid of pitch p covers
x in [c p, (c+1) p) and y in [r p, (r+1) p).

The fraction of a unit-mass 2-D Gaussian of standard deviation sigma centred at (x0, y0) that
falls in pixel (r, c) is separable, P_rc = P_r(y0) P_c(x0), with (Smith et al. 2010, Nat.
Methods 7:373):

    P_c(x0)      = 1/2 [erf(((c+1) p - x0) / (sqrt 2 sigma)) - erf((c p - x0) / (sqrt 2 sigma))]
    dP_c / dx0   = phi(c p - x0) - phi((c+1) p - x0),      phi(u) = exp(-u^2 / (2 sigma^2)) / (sqrt(2 pi) sigma)

evaluated exactly at each emitter's position: no rounding to any grid. Light falling outside
the grid is lost (a camera does not see it), so a spot near an edge sums to less than 1.

Rendering evaluates each spot on a window of pixels covering +-8 sigma around it (the mass
beyond, 1 - erf(8 / sqrt 2) = 1.2e-15, is below float64 resolution) and scatter-adds the
windows into the frames (``np.bincount``), a few frames at a time so that memory stays bounded.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

SQRT2 = math.sqrt(2.0)
TRUNCATE_SIGMAS = 8.0
CHUNK_PIXELS = 1 << 22  # frames x H x W accumulated per bincount call (32 MiB of float64)


def pixel_fractions_grad(pos_nm: np.ndarray, n_px: int, pixel_nm: float,
                         sigma_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, dP/dpos), each (n, n_px) float64: fractions and their derivative per nm of the centre."""
    edges = np.arange(n_px + 1) * float(pixel_nm)  # (n_px + 1,) nm
    u = edges[None, :] - np.asarray(pos_nm, dtype=np.float64)[:, None]  # (n, n_px + 1) nm
    cdf = erf(u / (SQRT2 * sigma_nm))
    pdf = np.exp(-0.5 * (u / sigma_nm) ** 2) / (math.sqrt(2.0 * math.pi) * sigma_nm)  # (n, n_px + 1) per nm
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1]), pdf[:, :-1] - pdf[:, 1:]


def window_fractions(pos_nm: np.ndarray, n_px: int, pixel_nm: float,
                     sigma_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """First pixel (n,) int64 and fractions (n, L) float64 of each spot on its +-8 sigma window of L pixels."""
    length = min(n_px, math.ceil(2.0 * TRUNCATE_SIGMAS * sigma_nm / pixel_nm) + 2)
    pos = np.asarray(pos_nm, dtype=np.float64)
    start = np.clip(np.floor((pos - TRUNCATE_SIGMAS * sigma_nm) / pixel_nm), 0, n_px - length).astype(np.int64)
    edges = (start[:, None] + np.arange(length + 1)) * float(pixel_nm)  # (n, L + 1) nm
    cdf = erf((edges - pos[:, None]) / (SQRT2 * sigma_nm))  # (n, L + 1)
    return start, 0.5 * (cdf[:, 1:] - cdf[:, :-1])


def render_spots(x_nm: np.ndarray, y_nm: np.ndarray, weights: np.ndarray, frame: np.ndarray, n_frames: int,
                 shape: tuple[int, int], pixel_nm: float, sigma_nm: float, dtype: type = np.float64) -> np.ndarray:
    """(n_frames, H, W): per frame, sum over its rows of weight x the pixel-integrated Gaussian.

    x_nm, y_nm, weights, frame: (R,) one row per spot; frame in 0..n_frames-1. Sums are float64
    in a fixed order (deterministic), then cast to dtype.
    """
    height, width = shape
    out = np.zeros((n_frames, height, width), dtype=dtype)  # (F, H, W)
    frame = np.asarray(frame, dtype=np.int64)
    if frame.size == 0:
        return out
    order = np.argsort(frame, kind="stable")  # (R,) rows grouped by frame
    frame = frame[order]
    x_nm, y_nm = np.asarray(x_nm, dtype=np.float64)[order], np.asarray(y_nm, dtype=np.float64)[order]
    weights = np.asarray(weights, dtype=np.float64)[order]
    per_chunk = max(1, CHUNK_PIXELS // (height * width))  # frames per bincount
    for f0 in range(0, n_frames, per_chunk):
        f1 = min(f0 + per_chunk, n_frames)
        rows = slice(*np.searchsorted(frame, [f0, f1]))
        if rows.start == rows.stop:
            continue
        col0, p_x = window_fractions(x_nm[rows], width, pixel_nm, sigma_nm)  # (n,), (n, Lx)
        row0, p_y = window_fractions(y_nm[rows], height, pixel_nm, sigma_nm)  # (n,), (n, Ly)
        values = weights[rows, None, None] * p_y[:, :, None] * p_x[:, None, :]  # (n, Ly, Lx)
        r = row0[:, None] + np.arange(p_y.shape[1])  # (n, Ly)
        c = col0[:, None] + np.arange(p_x.shape[1])  # (n, Lx)
        index = ((frame[rows, None, None] - f0) * height + r[:, :, None]) * width + c[:, None, :]  # (n, Ly, Lx)
        sums = np.bincount(index.ravel(), values.ravel(), minlength=(f1 - f0) * height * width)
        out[f0:f1] = sums.reshape(f1 - f0, height, width)
    return out
