"""The Cramér-Rao lower bound of (x, y, photons, background) for one emitter, vectorized over emitters.

Model of an ROI of k x k camera pixels (pitch a), emitter at (x, y) nm from the ROI's top-left
corner, N photons, background b photons per pixel (a constant, or a known map b_rc plus the
unknown constant), pixel-integrated Gaussian PSF P_rc (``psf``; Smith et al. 2010):

    mu_rc = N P_r(y) P_c(x) + b_rc                                   expected photons

Counts follow the camera's Poisson-normal model (``camera.CameraModel``: Huang et al. 2013),
x'_rc ~ Poisson(m_rc) with m_rc = qe mu_rc + c + s_rc^2, so the Fisher information is

    I_ij = (1 / F^2) sum_rc qe^2 (d mu_rc / d theta_i)(d mu_rc / d theta_j) / m_rc,

F^2 = 2 with an EM register (Mortensen et al. 2010, Nat. Methods 7:377: the excess noise halves
the information), else 1. The bound is the square root of the diagonal of I^-1 (a standard
deviation, in nm for x and y, photons for N and b). I is inverted after scaling to unit diagonal,
so that parameters of very different scales (nm vs thousands of photons) stay well conditioned.

Convention and check: N = 1000 photons, b = 10 photons/px, sigma = 130 nm, a = 100 nm, QE 1, no
read noise, emitter at the centre of the central pixel of an ROI of 2 ceil(4 sigma / a) + 1 =
13 px gives 5.626 nm; Mortensen et al.'s closed form for the MLE (their eq. 6, an integral
approximation of the same pixelated model) gives 5.625 nm (tests/test_crlb.py). The x bound no
longer changes beyond 11 px; the photon and background bounds still do (they depend on how many
background pixels the ROI holds), so they are quoted for the default ROI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from factory.errors import FactoryError
from factory.smlm.camera import CameraModel
from factory.smlm.psf import pixel_fractions_grad

ROI_SIGMAS = 4.0
MIN_EXPECTED_COUNTS = 1e-12  # floor of m_rc where a noiseless pixel would divide by zero


@dataclass(frozen=True)
class Crlb:
    """Bounds (standard deviations), each (n,) float64."""

    x_nm: np.ndarray
    y_nm: np.ndarray
    photons: np.ndarray
    background: np.ndarray


def default_roi_px(psf_sigma_nm: float, pixel_nm: float) -> int:
    """Odd ROI side, px: 2 ceil(4 sigma / a) + 1, at least 5."""
    return max(2 * math.ceil(ROI_SIGMAS * psf_sigma_nm / pixel_nm) + 1, 5)


def roi_model(x_nm: np.ndarray, y_nm: np.ndarray, photons: np.ndarray, background: np.ndarray, roi_px: int,
              pixel_nm: float, psf_sigma_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons mu (n, k, k) and its Jacobian (n, k, k, 4) in (x nm, y nm, N, b).

    x_nm, y_nm, photons: (n,); background: (n,) or (n, k, k) photons per pixel.
    """
    p_x, dp_x = pixel_fractions_grad(x_nm, roi_px, pixel_nm, psf_sigma_nm)  # (n, k) each
    p_y, dp_y = pixel_fractions_grad(y_nm, roi_px, pixel_nm, psf_sigma_nm)  # (n, k) each
    n = np.asarray(photons, dtype=np.float64)[:, None, None]  # (n, 1, 1)
    shape = p_y[:, :, None] * p_x[:, None, :]  # (n, k, k) P_r(y) P_c(x)
    b = np.asarray(background, dtype=np.float64)
    mu = n * shape + (b if b.ndim == 3 else b[:, None, None])  # (n, k, k)
    jac = np.stack([n * p_y[:, :, None] * dp_x[:, None, :], n * dp_y[:, :, None] * p_x[:, None, :],
                    shape, np.ones_like(shape)], axis=-1)  # (n, k, k, 4)
    return mu, jac


def fisher_information(mu: np.ndarray, jac: np.ndarray, camera: CameraModel,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """(n, 4, 4) Fisher information from mu (n, k, k) photons and jac (n, k, k, 4); mask (n, k, k) keeps pixels."""
    m = np.maximum(camera.expected_counts(mu), MIN_EXPECTED_COUNTS)  # (n, k, k) mean of x'
    weight = camera.qe**2 / (camera.excess_noise_factor_sq * m)  # (n, k, k)
    if mask is not None:
        weight = weight * mask
    n = jac.shape[0]
    flat = jac.reshape(n, -1, 4)  # (n, k*k, 4)
    return np.matmul((flat * weight.reshape(n, -1, 1)).transpose(0, 2, 1), flat)  # (n, 4, 4)


def bounds_from_fisher(fisher: np.ndarray) -> np.ndarray:
    """(n, 4, 4) Fisher information -> (n, 4) square roots of the diagonal of its inverse."""
    scale = np.sqrt(np.einsum("nii->ni", fisher))  # (n, 4)
    if not (scale > 0).all():
        raise FactoryError("the Fisher information is singular: an emitter with 0 photons cannot be localized.")
    try:
        inv = np.linalg.inv(fisher / (scale[:, :, None] * scale[:, None, :]))  # (n, 4, 4) unit-diagonal scaling
    except np.linalg.LinAlgError:
        raise FactoryError("the Fisher information is singular: the parameters cannot be told apart.") from None
    return np.sqrt(np.einsum("nii->ni", inv)) / scale


def crlb(photons, background, psf_sigma_nm: float, pixel_nm: float, camera: CameraModel = CameraModel(), *,
         dx_px=0.0, dy_px=0.0, roi_px: int | None = None) -> Crlb:
    """The bound of emitters alone on a flat background (module docstring), vectorized.

    photons, background (photons per pixel), dx_px, dy_px: numbers or arrays broadcasting to (n,);
    (dx_px, dy_px) is the emitter's offset from the centre of the ROI's central pixel (0: centred,
    +-0.5: on its edge). roi_px: odd ROI side (default ``default_roi_px``).
    """
    k = roi_px or default_roi_px(psf_sigma_nm, pixel_nm)
    n_ph, b, dx, dy = (a.astype(np.float64).ravel() for a in np.broadcast_arrays(photons, background, dx_px, dy_px))
    centre_nm = (k // 2 + 0.5) * pixel_nm
    mu, jac = roi_model(centre_nm + dx * pixel_nm, centre_nm + dy * pixel_nm, n_ph, b, k, pixel_nm, psf_sigma_nm)
    sd = bounds_from_fisher(fisher_information(mu, jac, camera))  # (n, 4)
    return Crlb(x_nm=sd[:, 0], y_nm=sd[:, 1], photons=sd[:, 2], background=sd[:, 3])


def emitter_crlb(x_nm: np.ndarray, y_nm: np.ndarray, photons: np.ndarray, background: np.ndarray,
                 psf_sigma_nm: float, pixel_nm: float, camera: CameraModel, roi_px: int | None = None) -> Crlb:
    """The bound of each emitter alone on its own background, in a camera field (the emitter table's).

    x_nm, y_nm, photons: (n,) in field coordinates; background: (h, w) photons per pixel and frame.
    camera.read_noise_e may be an (h, w) map. The ROI is centred on the emitter's pixel; pixels
    outside the field carry no information (masked), so emitters near an edge get wider bounds.
    """
    if np.size(x_nm) == 0:  # a sample whose labels never switched on in the stack: no rows, no bounds
        empty = np.zeros(0, np.float64)
        return Crlb(x_nm=empty, y_nm=empty, photons=empty, background=empty)
    k = roi_px or default_roi_px(psf_sigma_nm, pixel_nm)
    height, width = background.shape
    col0 = np.floor(np.asarray(x_nm) / pixel_nm).astype(np.int64) - k // 2  # (n,) ROI's first column
    row0 = np.floor(np.asarray(y_nm) / pixel_nm).astype(np.int64) - k // 2  # (n,) ROI's first row
    rows = row0[:, None] + np.arange(k)  # (n, k)
    cols = col0[:, None] + np.arange(k)  # (n, k)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]  # (n, k, k)
    r = np.clip(rows, 0, height - 1)[:, :, None]
    c = np.clip(cols, 0, width - 1)[:, None, :]
    mu, jac = roi_model(x_nm - col0 * pixel_nm, y_nm - row0 * pixel_nm, photons, background[r, c], k, pixel_nm,
                        psf_sigma_nm)  # (n, k, k), (n, k, k, 4)
    read = np.asarray(camera.read_noise_e, dtype=np.float64)
    local = camera if read.ndim == 0 else CameraModel(qe=camera.qe, read_noise_e=read[r, c], em_gain=camera.em_gain,
                                                      spurious_charge=camera.spurious_charge)
    sd = bounds_from_fisher(fisher_information(mu, jac, local, mask=inside))  # (n, 4)
    return Crlb(x_nm=sd[:, 0], y_nm=sd[:, 1], photons=sd[:, 2], background=sd[:, 3])
