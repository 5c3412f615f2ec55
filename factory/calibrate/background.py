"""The background of a widefield frame: a smooth map under the structure, its mean, variation and correlation length.

:func:`background_map` estimates the smooth background b(x) (ADU) under the structure: a median
filter of side ``window_px`` (odd; default about 1.6 um: wider than any filament profile, narrower
than the background's own correlation length) to start, then three rounds of masking the
structure (pixels where the image smoothed by a Gaussian of 1 px exceeds the map by 3 noise
standard deviations, dilated by 2 px) and averaging the unmasked pixels nearby (normalized
convolution with a Gaussian of sigma w / 4 where at least 20 % of the weight is unmasked, else
of sigma w across larger masked areas, else the mean of all unmasked pixels). Filling the masked pixels with the previous map
instead (a masked median) kept the structure's excess and biased the map up by 11-17 %. Then, in photons (after the
camera: (b - offset) / (G qe)), the parameters of :mod:`factory.optics.background`
(b = b_mean exp(v f) / mean(exp(v f)), f a unit Gaussian field of Gaussian autocorrelation
exp(-d^2 / (2 s^2))):

- ``background_photons`` = mean of b;
- ``background_sigma_nm`` s: the lag where the radial autocorrelation of log b falls to
  exp(-1/2), less the filter's own smoothing in quadrature (a Gaussian of sigma w / 4 adds
  (w / 4)^2 to s^2);
- ``background_variation`` v = std(log b), scaled up by the variance the filter removed,
  (1 + w^2 / (16 s^2)) for a Gaussian field (one factor of sqrt per axis).

All three are approximate (structure the mask misses raises b; masked areas are interpolated);
they are reported with that caveat, and the tests check the mean within 10 %.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter, median_filter

GAUSS_1PX_NOISE = 1.0 / (2.0 * math.sqrt(math.pi))  # noise sd left by a unit-sum Gaussian of sigma 1 px
WINDOW_NM = 1600.0


@dataclass(frozen=True)
class BackgroundMap:
    """``adu`` (H, W) smooth background, ``signal`` (H, W) True where structure was masked."""

    adu: np.ndarray
    signal: np.ndarray
    window_px: int


def default_window_px(pixel_nm: float) -> int:
    w = max(5, int(round(WINDOW_NM / pixel_nm)))
    return w + 1 - w % 2  # odd


def background_map(image: np.ndarray, noise_sd_adu: float, window_px: int) -> BackgroundMap:
    """The smooth background of one (H, W) frame (ADU) and the structure mask (see the module docstring)."""
    x = np.asarray(image, np.float64)
    b = median_filter(x, size=window_px, mode="reflect")  # robust start
    signal = np.zeros(x.shape, bool)
    for _ in range(3):
        excess = gaussian_filter(x - b, 1.0, mode="reflect")
        signal = binary_dilation(excess > 3.0 * GAUSS_1PX_NOISE * noise_sd_adu, iterations=2)
        keep = (~signal).astype(np.float64)
        if not keep.any():
            break
        b_far = np.full(x.shape, float(x[~signal].mean()))
        for sigma, enough in ((window_px, 0.01), (window_px / 4.0, 0.2)):  # wide fill first, then the near mean over it
            weight = gaussian_filter(keep, sigma, mode="reflect")
            local = gaussian_filter(x * keep, sigma, mode="reflect") / np.maximum(weight, 1e-12)
            b_far = np.where(weight > enough, local, b_far)  # mean of the unmasked pixels around (normalized convolution)
        b = b_far
    return BackgroundMap(b, signal, window_px)


def correlation_length_px(log_b: np.ndarray) -> float:
    """Lag (px) where the radial autocorrelation of a mean-free field falls to exp(-1/2) of its value at 0."""
    f = log_b - log_b.mean()
    h, w = f.shape
    spectrum = np.fft.rfft2(f, s=(2 * h, 2 * w))  # zero-padded: no wrap-around
    acf = np.fft.irfft2(np.abs(spectrum) ** 2, s=(2 * h, 2 * w))
    overlap = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones_like(f), s=(2 * h, 2 * w))) ** 2, s=(2 * h, 2 * w))
    acf = acf / np.maximum(overlap, 1.0)  # mean product per overlapping pair
    y, x = np.meshgrid(np.fft.fftfreq(2 * h) * 2 * h, np.fft.fftfreq(2 * w) * 2 * w, indexing="ij")
    lag = np.hypot(y, x)
    near = lag < min(h, w) / 2
    r = np.round(lag[near]).astype(int)
    profile = np.bincount(r, acf[near]) / np.maximum(np.bincount(r), 1)
    if profile[0] <= 0:
        return float("inf")
    below = np.flatnonzero(profile < math.exp(-0.5) * profile[0])
    if len(below) == 0:
        return float("inf")  # correlated over the whole field
    i = int(below[0])
    p0, p1, target = profile[i - 1], profile[i], math.exp(-0.5) * profile[0]
    return float(i - 1 + (p0 - target) / (p0 - p1))


@dataclass(frozen=True)
class BackgroundEstimate:
    mean_photons: float
    variation: float
    sigma_nm: float  # inf: correlated over the whole field (report the field size instead)
    tile_means_photons: np.ndarray  # (T,) mean background of each tile


def describe(bg: BackgroundMap, offset_adu: float, adu_per_photon: float, pixel_nm: float, tile_px: int) -> BackgroundEstimate:
    """Background parameters in photons per pixel (see the module docstring)."""
    from factory.optics.contrast import tiles

    photons = np.maximum(bg.adu - offset_adu, 1e-6) / adu_per_photon  # (H, W)
    log_b = np.log(photons)
    w = bg.window_px
    s_obs = correlation_length_px(log_b)
    s_px = math.sqrt(max(s_obs**2 - w**2 / 16.0, (w / 4.0) ** 2)) if math.isfinite(s_obs) else s_obs
    v = float(log_b.std()) * (math.sqrt(1.0 + w**2 / (16.0 * s_px**2)) if math.isfinite(s_px) else 1.0)
    tile_means = tiles(photons, min(tile_px, *photons.shape)).mean(axis=(1, 2))
    return BackgroundEstimate(float(photons.mean()), v, s_px * pixel_nm, tile_means)
