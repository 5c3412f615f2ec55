"""Camera offset, gain and read noise from the user's own frames (photon transfer with third moments).

The camera of :mod:`factory.optics.camera` (no EM register) turns lambda expected photo-electrons
into ADU = G (Poisson(lambda) + sigma_e N(0, 1)) + o, rounded, with G = 1 / gain_e_per_adu ADU
per e-. Its first three cumulants are

    mean  m   = o + G lambda
    k2        = G (m - o) + G^2 sigma_e^2 + 1/12                  (photon transfer, Janesick 2007)
    k3        = G^2 (m - o)                                        (Poisson: k3 = lambda; Gaussian read noise: 0)

The variance line alone gives G but only the combination G^2 sigma_e^2 - G o of offset and read
noise; the third cumulant, which only the Poisson part has, separates them (its x-intercept is o).
Samples of (m, k2, k3) come from

- a stack of N >= 6 repeated frames of a static field (:func:`temporal_moments`): per pixel over
  time, every pixel from background to the brightest structure. Pixels are grouped into bins by
  their mean over the even frames and their moments taken over the odd frames (and the other way
  round): grouping by the same frames' mean would select pixels whose noise went up, which biased
  the offset by -0.4 to -1.4 ADU in simulations;
- a single frame (:func:`spatial_moments`): the residual r = x - (mean of the 8 neighbours) of
  background-only pixels, whose cumulants are k2 (1 + 1/8) and k3 (1 - 1/64) where the expectation
  is locally linear, grouped by the smooth background map. Only the background's own spatial
  variation spreads m, so G is less certain, and k3 from one frame is noisy: on 256 x 256 frames
  with 8 background e- per pixel varying by 30 %, G came out 2-5 % low and the offset scattered
  by 0.7-1.4 ADU (6 seeds); on a flat background the three cannot be separated at all, and
  :func:`fit_camera` is then asked to hold the read noise at an assumed value;
- dark frames: the offset and read noise directly (the mean and the temporal variance);
- flat frames (a stack of evenly lit frames): more temporal samples at high m, which pin G.

:func:`fit_camera` fits G, o and the read variance to all bins at once (``scipy.optimize.least_squares``,
each residual divided by its sampling standard deviation, first for Gaussian-like data, then as
the fitted model's cumulants predict, :func:`_model_sd`); the uncertainties come from the
Jacobian, scaled up by the reduced chi^2 when it exceeds 1. An EM register changes the k3 relation; it is not modelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve
from scipy.optimize import least_squares

from factory.errors import FactoryError

MIN_TEMPORAL_FRAMES = 6
QUANTIZATION_VAR = 1.0 / 12.0  # ADU^2


@dataclass(frozen=True)
class Moments:
    """Cumulant samples grouped in bins: mean (B,) ADU, k2 (B,) ADU^2, k3 (B,) ADU^3, their
    sampling standard deviations sd2, sd3 (B,), and the pixels per bin (B,)."""

    mean: np.ndarray
    k2: np.ndarray
    k3: np.ndarray
    sd2: np.ndarray
    sd3: np.ndarray
    count: np.ndarray
    samples: np.ndarray  # (B,) values behind each pixel's statistic (frames; 1 for residuals)

    @staticmethod
    def concat(parts: list["Moments"]) -> "Moments":
        names = ("mean", "k2", "k3", "sd2", "sd3", "count", "samples")
        return Moments(*(np.concatenate([getattr(p, f) for p in parts]) for f in names))


def _binned(key: np.ndarray, mean: np.ndarray, k2: np.ndarray, k3: np.ndarray, samples: int, bins: int) -> Moments:
    """Average per-pixel statistics in ``bins`` groups of equal size by ``key``; samples = values per pixel statistic."""
    order = np.argsort(key, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    m = np.array([mean[g].mean() for g in groups])
    c2 = np.array([k2[g].mean() for g in groups])
    c3 = np.array([k3[g].mean() for g in groups])
    n = np.array([len(g) for g in groups], dtype=np.float64)
    var2 = np.maximum(c2, 1e-3)
    sd2 = var2 * np.sqrt(2.0 / (n * max(samples - 1, 1)))
    sd3 = np.sqrt(6.0 * var2**3 / (n * samples))
    return Moments(m, c2, c3, sd2, sd3, n, np.full(len(n), float(samples)))


def _kstats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel mean, unbiased k2 and k3 (Fisher's k-statistics) over axis 0 of (n, ...)."""
    n = x.shape[0]
    m = x.mean(axis=0)
    d = x - m
    k2 = (d**2).sum(axis=0) / (n - 1)
    k3 = (d**3).sum(axis=0) * n / ((n - 1) * (n - 2))
    return m, k2, k3


def temporal_moments(stack: np.ndarray, bins: int = 40) -> Moments:
    """Bins of per-pixel temporal cumulants of (N, H, W) repeated frames of a static field (N >= 6)."""
    x = np.asarray(stack, np.float64)
    if x.ndim != 3 or x.shape[0] < MIN_TEMPORAL_FRAMES:
        raise FactoryError(f"temporal photon transfer needs a stack of at least {MIN_TEMPORAL_FRAMES} frames, got shape {x.shape}.")
    even, odd = x[0::2].reshape(len(x[0::2]), -1), x[1::2].reshape(len(x[1::2]), -1)
    parts = []
    for keyed, measured in ((even, odd), (odd, even)):
        m, k2, k3 = _kstats(measured)
        parts.append(_binned(keyed.mean(axis=0), m, k2, k3, measured.shape[0], bins))
    return Moments.concat(parts)


NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float64) / 8.0


def spatial_moments(frame: np.ndarray, background: np.ndarray, usable: np.ndarray, bins: int = 20) -> Moments:
    """Bins of residual cumulants of one (H, W) frame over the ``usable`` background-only pixels,
    grouped by the smooth ``background`` map (ADU)."""
    x = np.asarray(frame, np.float64)
    r = x - convolve(x, NEIGHBOURS, mode="reflect")  # (H, W) x_0 - mean of 8 neighbours
    keep = usable.copy()
    keep[0, :] = keep[-1, :] = keep[:, 0] = keep[:, -1] = False  # reflected borders repeat pixels
    if keep.sum() < 200:
        raise FactoryError(f"only {int(keep.sum())} background-only pixels: too few to measure the camera noise; "
                           "give a dark stack (--dark) or a stack of frames.")
    key, mean, res = background[keep], x[keep], r[keep]
    order = np.argsort(key, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order) // 100 or 1)) if len(g)]
    m, c2, c3, n = [], [], [], []
    for g in groups:
        d = res[g] - res[g].mean()
        m.append(mean[g].mean())
        c2.append((d**2).mean() / (1 + 1 / 8))
        c3.append((d**3).mean() / (1 - 1 / 64))
        n.append(len(g))
    m, c2, c3, n = map(np.asarray, (m, c2, c3, n))
    var2 = np.maximum(c2, 1e-3)
    return Moments(m, c2, c3, var2 * np.sqrt(2.0 / n), np.sqrt(6.0 * var2**3 / n), n.astype(np.float64), np.ones(len(n)))


@dataclass(frozen=True)
class CameraFit:
    """G (ADU per e-), offset (ADU) and read variance (ADU^2, including 1/12 of quantization), each
    with a standard error; ``fixed`` names what came from dark frames instead of the fit."""

    gain_adu_per_e: float
    offset_adu: float
    read_var_adu2: float
    sd_gain_adu_per_e: float
    sd_offset_adu: float
    sd_read_var_adu2: float
    fixed: tuple[str, ...] = ()

    @property
    def gain_e_per_adu(self) -> float:
        return 1.0 / self.gain_adu_per_e

    @property
    def read_noise_e(self) -> float:
        return math.sqrt(max(self.read_var_adu2 - QUANTIZATION_VAR, 0.0)) / self.gain_adu_per_e

    def electrons(self, adu: np.ndarray) -> np.ndarray:
        """ADU -> expected photo-electrons above the offset."""
        return (np.asarray(adu, np.float64) - self.offset_adu) / self.gain_adu_per_e

    def variance_adu2(self, mean_adu: np.ndarray) -> np.ndarray:
        """Predicted pixel variance (ADU^2) at a mean level (the photon transfer line)."""
        return self.gain_adu_per_e * np.maximum(np.asarray(mean_adu) - self.offset_adu, 0.0) + self.read_var_adu2


def dark_level(dark: np.ndarray) -> tuple[float, float, float, float]:
    """(offset ADU, its sd, read variance ADU^2, its sd) from (N, H, W) dark frames: the mean and the
    temporal variance (spatial variance for a single frame)."""
    x = np.asarray(dark, np.float64)
    if x.shape[0] >= 2:
        var = float(x.var(axis=0, ddof=1).mean())
        samples = x[0].size * (x.shape[0] - 1)
    else:
        var = float(x[0].var(ddof=1))
        samples = x[0].size - 1
    return float(x.mean()), math.sqrt(var / x.size), var, var * math.sqrt(2.0 / samples)


def fit_camera(moments: Moments, offset: tuple[float, float] | None = None,
               read_var: tuple[float, float] | None = None, read_noise_e: float | None = None) -> CameraFit:
    """Fit G, o, read variance to binned cumulants (see the module docstring); ``offset`` and
    ``read_var`` as (value, sd) from dark frames are held fixed; ``read_noise_e`` (e- rms, an
    assumption) holds the read variance at (read_noise_e G)^2 + 1/12 as G varies."""
    m, k2, k3 = moments.mean, moments.k2, moments.k3
    if read_noise_e is not None and read_var is None:
        read_var = (0.0, 0.0)  # placeholder: computed from G below
    free = [name for name, given in (("offset", offset), ("read_var", read_var)) if given is None]
    slope, intercept = np.polyfit(m, k2, 1, w=1 / moments.sd2) if len(m) > 1 else (1.0, 0.0)
    g0 = max(float(slope), 1e-3)
    o0 = float(np.median(m - k3 / g0**2)) if offset is None else offset[0]  # k3 = G^2 (m - o)
    guess = {"gain": g0, "offset": o0, "read_var": max(float(intercept) + g0 * o0, 0.1)}  # k2 = G m - G o + read var
    names = ["gain", *free]

    def unpack(p):
        v = dict(zip(names, p))
        g = v["gain"]
        rv = v.get("read_var", read_var[0] if read_var else 0.0)
        if read_noise_e is not None and "read_var" not in v:
            rv = (read_noise_e * g) ** 2 + QUANTIZATION_VAR
        return g, v.get("offset", offset[0] if offset else 0.0), rv

    sd2, sd3 = moments.sd2, moments.sd3

    def residuals(p):
        g, o, rv = unpack(p)
        return np.concatenate([(k2 - (g * (m - o) + rv)) / sd2, (k3 - g**2 * (m - o)) / sd3])

    if len(m) * 2 <= len(names):
        raise FactoryError("too few intensity levels to fit the camera; give dark frames (--dark) or a stack of frames.")
    lower = [1e-6] + [-np.inf if n == "offset" else 0.0 for n in free]
    fit = least_squares(residuals, [guess[n] for n in names], bounds=(lower, np.inf), x_scale="jac")
    # refit with the standard deviations the fitted model predicts: weights taken from each bin's own k2
    # correlate with its k3 (for skewed data) and biased the offset by about +0.4 ADU in simulations
    sd2, sd3 = _model_sd(*unpack(fit.x), moments)
    fit = least_squares(residuals, fit.x, bounds=(lower, np.inf), x_scale="jac")
    dof = max(len(fit.fun) - len(names), 1)
    chi2 = float(fit.fun @ fit.fun) / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * max(chi2, 1.0)
    except np.linalg.LinAlgError:
        raise FactoryError("the camera fit is degenerate (the frames hold too narrow a range of intensities); "
                           "give dark frames (--dark) or a stack of frames.") from None
    sd = dict(zip(names, np.sqrt(np.diag(cov))))
    g, o, rv = unpack(fit.x)
    return CameraFit(g, o, rv, sd["gain"], sd.get("offset", offset[1] if offset else 0.0),
                     sd.get("read_var", read_var[1] if read_var else 0.0),
                     tuple(n for n, given in (("offset_adu", offset), ("read_noise_e", read_var)) if given is not None))


def _model_sd(g: float, o: float, rv: float, moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Sampling sd of the bins' mean k2 and k3 from the model's cumulants: Poisson electrons (kappa_j =
    G^(j-1) (m - o) in ADU) plus Gaussian read noise; for n values var(k2) = k4 / n + 2 k2^2 / (n - 1) and
    var(k3) = k6 / n + 9 k4 k2 / (n - 1) + 9 k3^2 / (n - 1) + 6 n k2^3 / ((n - 1)(n - 2)) (Kendall & Stuart,
    the variances of Fisher's k-statistics)."""
    u = np.maximum(moments.mean - o, 1e-3)
    c2, c3, c4, c6 = g * u + rv, g**2 * u, g**3 * u, g**5 * u
    temporal = moments.samples > 1  # k-statistics over a few frames per pixel, averaged over the bin's pixels
    n = np.where(temporal, moments.samples, moments.count)
    per = np.where(temporal, moments.count, 1.0)
    var2 = c4 / n + 2 * c2**2 / (n - 1)
    var3 = c6 / n + 9 * c4 * c2 / (n - 1) + 9 * c3**2 / (n - 1) + 6 * n * c2**3 / ((n - 1) * (n - 2))
    return np.sqrt(var2 / per), np.sqrt(var3 / per)


def ill_conditioned(fit: CameraFit) -> bool:
    """True when the frames could not separate offset, gain and read noise (a flat, single frame)."""
    return fit.sd_offset_adu > 3.0 or fit.sd_gain_adu_per_e > 0.1 * fit.gain_adu_per_e
