"""HR density -> LR camera frame: the optical degradation as one pure function.

    E = s * M_y @ max(HR, 0) @ M_x^T + b        expected photons per LR pixel, (N, h, w)
    LR = camera(E, rng)                          uint16 ADU

M_y, M_x blur with the PSF and sum-bin by k (``psf.blur_bin_matrix``; flux-conserving, borders
reflected). The scale s depends on ``params.photon_scale`` (:mod:`factory.optics.params`):
``peak`` makes the brightest LR pixel of each image receive exactly ``params.photons``
expected signal photons (before background; the HR's own scale does not matter, only its
shape; an all-zero HR gives no signal); ``density`` is s = ``params.photons`` photons per
unit of HR density per HR pixel (the HR's scale matters). b is the background
(``background.background_photons``). Negative densities are clipped to 0. Work is float32
unless the HR is float64.

Cost (benchmarks/degrade.py, one core): ~0.6 ms per 256x256 -> 64x64 image, most of it the
Poisson draws. Run one call per core (a 1-CPU Ray task gets OMP_NUM_THREADS=1): at these sizes
BLAS threads gain little, and on a machine whose cores are busy they cost milliseconds per call.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from factory.errors import FactoryError
from factory.optics.background import background_photons
from factory.optics.camera import detect
from factory.optics.params import DegradationParams, PhotonScale
from factory.optics.psf import blur_bin_matrix


def _as_batch(hr: np.ndarray, downsample: int) -> np.ndarray:
    """Check shape and divisibility; (H, W) or (N, H, W) -> (N, H, W) view."""
    hr = np.asarray(hr)
    if hr.ndim not in (2, 3):
        raise FactoryError(f"the HR image must be (H, W) or (N, H, W), got shape {hr.shape}.")
    if not np.issubdtype(hr.dtype, np.number) or np.issubdtype(hr.dtype, np.complexfloating):
        raise FactoryError(f"the HR image must hold real numbers, got {hr.dtype}.")
    height, width = hr.shape[-2:]
    if height < downsample or width < downsample or height % downsample or width % downsample:
        raise FactoryError(f"downsample {downsample} does not divide the HR image size {height}x{width}.")
    return hr.reshape(-1, height, width)


def expected_photons(hr: np.ndarray, hr_pixel_nm: float, params: DegradationParams) -> np.ndarray:
    """Noise-free expected photons per LR pixel (signal + background): (H, W) -> (H//k, W//k),
    (N, H, W) -> (N, H//k, W//k). ``params.photons`` is scaled as ``params.photon_scale`` says
    (see the module docstring)."""
    if not (isinstance(hr_pixel_nm, numbers.Real) and math.isfinite(hr_pixel_nm) and hr_pixel_nm > 0):
        raise FactoryError(f"hr_pixel_nm must be > 0 nm, got {hr_pixel_nm!r}.")
    k = params.downsample
    lead = np.shape(hr)[:-2]
    x = _as_batch(hr, k)  # (N, H, W)
    n, height, width = x.shape
    h, w = height // k, width // k
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    sigma_px = params.psf_sigma_nm / hr_pixel_nm
    m_y = blur_bin_matrix(height, k, sigma_px, params.psf_model).astype(dtype)  # (h, H)
    m_x_t = np.ascontiguousarray(blur_bin_matrix(width, k, sigma_px, params.psf_model).T, dtype=dtype)  # (W, w)
    density = x.astype(dtype, copy=False)  # (N, H, W)
    if density.min() < 0:
        density = np.maximum(density, 0)  # a copy: negative density emits nothing
    rows = (density.reshape(n * height, width) @ m_x_t).reshape(n, height, w)  # (N, H, w) one GEMM
    signal = np.matmul(m_y, rows)  # (N, h, w) photons up to the scale s
    if not np.isfinite(signal).all():
        raise FactoryError("the HR image contains NaN or infinite values.")
    if params.photon_scale is PhotonScale.DENSITY:
        signal *= params.photons  # photons per unit density per HR pixel; M conserves flux
    else:
        peak = signal.max(axis=(1, 2), keepdims=True)  # (N, 1, 1)
        signal *= np.divide(params.photons, peak, out=np.zeros_like(peak), where=peak > 0)
    signal += background_photons(params, (n, h, w), hr_pixel_nm * k)  # (N, h, w) or (1, 1, 1)
    return signal.reshape(*lead, h, w)


def degrade(hr: np.ndarray, hr_pixel_nm: float, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """One noisy LR camera frame per HR image, uint16 ADU, shape (..., H//k, W//k).

    All randomness (shot, EM and read noise) comes from ``rng``; the same generator state
    gives the same frame bit for bit (on one platform: another CPU's BLAS kernels may round
    the float32 expectation differently in the last bit, which can flip a rare Poisson draw). The structured background's field comes from
    ``params.background_seed``, which ``DegradationConfig.draw`` took from the same rng.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")
    return detect(expected_photons(hr, hr_pixel_nm, params), params, rng)


def degrade_sample(hr: np.ndarray, hr_pixel_nm: float, cfg, run_seed: int, sample_id: int,
                   noise: bool = True) -> tuple[np.ndarray, DegradationParams]:
    """Sample i's LR frame and the parameters it was drawn with: the one per-sample degradation that
    ``factory generate`` and ``factory degrade`` share. Everything random comes from
    ``seeding.degradation_rng(run_seed, i)``: first the parameters (``cfg.draw``), then the noise.
    ``noise=False`` returns the float32 expectation (photons per LR pixel) instead of uint16 ADU."""
    from factory.seeding import degradation_rng

    rng = degradation_rng(run_seed, sample_id)
    params = cfg.draw(rng)
    if not noise:
        return expected_photons(hr, hr_pixel_nm, params).astype(np.float32, copy=False), params
    return degrade(hr, hr_pixel_nm, params, rng), params
