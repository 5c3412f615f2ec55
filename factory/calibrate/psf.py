"""The effective PSF width of a widefield image: from its own spots and filaments, or against a registered SR reference.

**Without a reference** (:func:`sigma_from_structures`). Around each local maximum of the
background-subtracted image (non-maximum suppression over 5 x 5 px, the brightest
``max_windows``, at least 8 noise sd above the background), a (2R + 1)^2 window (R = 3 px) is
fitted by ``scipy.optimize.least_squares`` with an elliptical Gaussian integrated over each
pixel (5 x 5 sub-samples) plus a constant,

    I(y, x) = A g(y, x; y0, x0, sigma_minor, sigma_major, theta) + c,

weighted by the camera's noise model. A point source gives sigma_minor = sigma_major = sigma; a
straight filament segment gives sigma_major >> sigma_minor = sigma (the profile across a line
blurred by a Gaussian is that Gaussian). Fits whose reduced chi^2 exceeds 3 (two structures in
one window, a crossing), whose ridge passes more than 1 px from the window centre (along a
filament the centre is free), or whose minor sigma hits its bounds are dropped; the estimate is the median sigma_minor of the rest, its
uncertainty 1.25 sd / sqrt(n) with the sd from the median absolute deviation. What it measures
is the width of the image of the structure: sqrt(sigma_PSF^2 + sigma_structure^2) (a
microtubule's labelled profile adds about 25 nm in quadrature, 3 % at sigma 95 nm).

**With a reference** (:func:`fit_reference`): the SR image s on a grid p_s that divides the camera
pixel p by an integer m is the noise-free structure. The widefield spectrum W(q) is fitted on the
band p / 1000 nm < |q| < 0.5 cycles/px (the smooth background and the offset live below it) by

    W(q) ~ a M_sigma(q) exp(-2 pi i q . d),      M_sigma = DFT(bin_m(G_sigma * s)),

with the amplitude a in closed form (a = Re sum W conj(M') / sum |M'|^2, the ratio of the cross
to the model's power spectrum), sigma by a scan of 25 log-spaced widths (0.1-10 x 100 nm; far from
the fit the cost is flat and bumpy, and a bounded search alone stopped there, at 10 x the true
width, in 3 of 12 benchmark cases) refined by a bounded scalar search (``scipy.optimize.minimize_scalar``)
between the scan's neighbours, with d held at the phase-correlation shift against the current
model; twice. The model is
degrade's own blur-and-bin (:func:`factory.optics.psf.blur_bin_matrix`), so a config made from
it reproduces the image. Both images are Tukey-windowed alike. The uncertainty of sigma is where the
residual sum of squares rises by one residual variance (Delta chi^2 = 1, the other parameters held).
The expected signal of the widefield image is then a bin_m(G_sigma * s) shifted by d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import fourier_shift, maximum_filter
from scipy.optimize import least_squares, minimize_scalar

from factory.errors import FactoryError
from factory.metrics.frc import WINDOW_ALPHA, windowed
from factory.metrics.register import estimate_shift
from factory.optics.params import PsfModel
from factory.optics.psf import blur_bin_matrix

WINDOW_RADIUS = 3  # px
SUBSAMPLES = 5
MAX_CHI2 = 3.0


@dataclass(frozen=True)
class PsfEstimate:
    sigma_px: float
    sd_sigma_px: float
    fits: int  # windows used (structures) or Fourier samples (reference)
    method: str


def _model(p: np.ndarray, grid: tuple[np.ndarray, np.ndarray], jacobian: bool = False):
    """Pixel-integrated elliptical Gaussian + constant on the sub-sampled window grid -> (P,) values
    for P = (2R+1)^2 pixels, or with ``jacobian`` its (P, 7) derivatives (analytic: the fits run ~8x
    faster than with finite differences)."""
    amp, y0, x0, s1, s2, theta, const = p  # s1 across (minor when s1 < s2), s2 along
    yy, xx = grid  # (P, S) sub-sample coordinates for each of P pixels
    c, s = math.cos(theta), math.sin(theta)
    dy, dx = yy - y0, xx - x0
    u = dy * c + dx * s  # across (minor axis)
    v = -dy * s + dx * c  # along (major axis)
    g = np.exp(-0.5 * (u / s1) ** 2 - 0.5 * (v / s2) ** 2)  # (P, S)
    if not jacobian:
        return amp * g.mean(axis=1) + const
    du, dv = u / s1**2, v / s2**2  # d(-exponent)/du, /dv
    cols = [g,  # d/d amp (before the amp factor)
            amp * g * (du * c - dv * s),  # d/d y0: du/dy0 = -c, dv/dy0 = s
            amp * g * (du * s + dv * c),  # d/d x0: du/dx0 = -s, dv/dx0 = -c
            amp * g * u**2 / s1**3,
            amp * g * v**2 / s2**3,
            amp * g * -(du * v - dv * u),  # d/d theta: du/dtheta = v, dv/dtheta = -u
            ]
    return np.stack([col.mean(axis=1) for col in cols] + [np.ones(len(g))], axis=1)


def _window_grid(radius: int) -> tuple[np.ndarray, np.ndarray]:
    side = 2 * radius + 1
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5  # sub-pixel sample positions
    py, px = np.meshgrid(np.arange(side) - radius, np.arange(side) - radius, indexing="ij")
    sy, sx = np.meshgrid(offsets, offsets, indexing="ij")
    return (py.reshape(-1, 1) + sy.reshape(1, -1), px.reshape(-1, 1) + sx.reshape(1, -1))


def _ridge_angle(window: np.ndarray) -> float:
    """Angle theta of the across-ridge axis (u = y cos theta + x sin theta) from the window's second
    moments: the direction of largest intensity-weighted spread is along the ridge."""
    w = np.maximum(window, 0.0)
    r = (window.shape[0] - 1) // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    total = max(float(w.sum()), 1e-12)
    myy, mxx, mxy = (w * yy**2).sum() / total, (w * xx**2).sum() / total, (w * yy * xx).sum() / total
    along = 0.5 * math.atan2(2 * mxy, myy - mxx)  # angle of the major axis from the y axis
    return along + math.pi / 2  # theta measures the minor (across) axis


def sigma_from_structures(image: np.ndarray, background: np.ndarray, variance: np.ndarray,
                          max_windows: int = 200) -> PsfEstimate:
    """PSF sigma (px) from local fits to spots and filament segments of one (H, W) image in ADU,
    with its smooth background and per-pixel noise variance (ADU^2) (see the module docstring)."""
    x = np.asarray(image, np.float64)
    excess = x - background
    sd = np.sqrt(np.maximum(variance, 1e-6))
    r = WINDOW_RADIUS
    peaks = (excess == maximum_filter(excess, size=5)) & (excess > 8.0 * sd)
    peaks[:r, :] = peaks[-r:, :] = peaks[:, :r] = peaks[:, -r:] = False
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-excess[ys, xs])[:max_windows]
    grid = _window_grid(r)
    sigmas = []
    for y, xc in zip(ys[order], xs[order]):
        win = x[y - r:y + r + 1, xc - r:xc + r + 1].ravel()
        w_sd = sd[y - r:y + r + 1, xc - r:xc + r + 1].ravel()
        const0 = float(background[y, xc])
        p0 = [excess[y, xc], 0.0, 0.0, 0.8, 2.0, 0.0, const0]
        lower = [0.0, -1.5, -1.5, 0.2, 0.2, -2 * math.pi, const0 - 10 * w_sd.max()]
        upper = [np.inf, 1.5, 1.5, 4.0, 30.0, 2 * math.pi, const0 + 10 * w_sd.max()]
        p0[5] = _ridge_angle(excess[y - r:y + r + 1, xc - r:xc + r + 1])
        best = least_squares(lambda p: (_model(p, grid) - win) / w_sd, p0, bounds=(lower, upper), x_scale="jac",
                             jac=lambda p: _model(p, grid, jacobian=True) / w_sd[:, None])
        chi2 = 2 * best.cost / (len(win) - 7)
        amp, y0, x0, s1, s2, theta = best.x[:6]
        if s2 < s1:  # the fit put the ridge along the other axis
            s1, s2, theta = s2, s1, theta + math.pi / 2
        across = abs(y0 * math.cos(theta) + x0 * math.sin(theta))  # window centre to the fitted ridge, px
        if chi2 > MAX_CHI2 or across > 1.0 or not 0.25 < s1 < 3.9:
            continue  # (along a filament the centre is free: only its distance across the ridge counts)
        sigmas.append(s1)
    if len(sigmas) < 5:
        raise FactoryError(f"found {len(sigmas)} isolated spots or filament segments bright enough to fit (need 5); "
                           "give an SR reference (--reference) or set psf_sigma_nm by hand.")
    s = np.asarray(sigmas)
    spread = 1.4826 * np.median(np.abs(s - np.median(s)))
    return PsfEstimate(float(np.median(s)), float(1.25 * spread / math.sqrt(len(s))), len(s), "spot and filament fits")


@dataclass(frozen=True)
class ReferenceFit:
    psf: PsfEstimate
    amplitude_adu: float  # a: ADU per unit of reference density per reference pixel
    shift_px: tuple[float, float]  # widefield content relative to the binned reference, camera px
    signal_adu: np.ndarray  # (H, W) expected signal of the widefield image (ADU above background)


def fit_reference(widefield: np.ndarray, reference: np.ndarray, bin_m: int, sigma0_px: float, q_min: float) -> ReferenceFit:
    """Fit sigma (in reference px), amplitude and shift of ``reference`` (on a grid ``bin_m`` times finer)
    to ``widefield`` on the band q_min < |q| <= 0.5 cycles/px (see the module docstring); sigma0_px is
    the starting width in reference px."""
    wf = np.asarray(widefield, np.float64)
    h, w = wf.shape
    ref = np.asarray(reference, np.float64)[: h * bin_m, : w * bin_m]
    if ref.shape != (h * bin_m, w * bin_m):
        raise FactoryError(f"the reference covers {ref.shape[0] / bin_m:g}x{ref.shape[1] / bin_m:g} camera px, "
                           f"less than the widefield image ({h}x{w}); they must show the same field.")

    def model(sigma_px: float) -> np.ndarray:  # degrade's own blur-and-bin: M_y @ ref @ M_x^T, (h, w)
        m_y = blur_bin_matrix(h * bin_m, bin_m, float(sigma_px), PsfModel.GAUSSIAN)
        m_x = blur_bin_matrix(w * bin_m, bin_m, float(sigma_px), PsfModel.GAUSSIAN)
        return m_y @ ref @ m_x.T

    qy, qx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    band = (np.hypot(qy, qx) > q_min) & (np.hypot(qy, qx) <= 0.5)
    W = np.fft.fft2(windowed(wf[None], WINDOW_ALPHA)[0])[band]
    shift0 = estimate_shift(wf, model(sigma0_px))

    def spectrum(p):
        sigma, dy, dx = p
        m = np.fft.fft2(windowed(model(abs(sigma))[None], WINDOW_ALPHA)[0])
        return (m * np.exp(-2j * np.pi * (qy * dy + qx * dx)))[band]

    def rss(p):
        m = spectrum(p)
        a = float((W * m.conj()).real.sum() / max((np.abs(m) ** 2).sum(), 1e-30))
        return float((np.abs(W - a * m) ** 2).sum()), a

    def cost(p):
        return rss(p)[0]

    sigma, (dy, dx) = sigma0_px, shift0
    grid = sigma0_px * np.geomspace(0.1, 10.0, 25)  # coarse log grid first: far from the fit the cost is flat and bumpy
    for _ in range(2):  # sigma with the shift held, then the shift re-measured against the fitted model
        best_i = int(np.argmin([cost([g, dy, dx]) for g in grid]))
        lo, hi = grid[max(best_i - 1, 0)], grid[min(best_i + 1, len(grid) - 1)]
        fit = minimize_scalar(lambda s_: cost([s_, dy, dx]), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4 * sigma0_px})
        sigma = float(fit.x)
        dy, dx = estimate_shift(wf, model(sigma))
    best, amp = rss([sigma, dy, dx])
    noise = best / max(len(W) - 4, 1)  # residual variance per Fourier sample
    step = 0.01 * sigma
    curvature = (cost([sigma + step, dy, dx]) - 2 * best + cost([sigma - step, dy, dx])) / step**2
    # Delta RSS = noise variance; x2: the band holds each independent coefficient twice (Hermitian symmetry)
    sd_sigma = math.sqrt(4 * noise / curvature) if curvature > 0 else float("inf")
    signal = amp * np.fft.ifft2(fourier_shift(np.fft.fft2(model(sigma)), (dy, dx))).real
    return ReferenceFit(PsfEstimate(sigma, sd_sigma, int(band.sum()), "fit to the SR reference spectrum"),
                        amp, (float(dy), float(dx)), signal)
