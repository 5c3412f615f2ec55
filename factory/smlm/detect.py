"""The MLE baseline on whole frames: detect candidate spots, cut ROIs, fit each with :func:`fit_mle`.

This is the classical single-emitter pipeline (ThunderSTORM, SMAP): it reaches the Cramér-Rao
bound on isolated emitters and fails where PSFs overlap (two emitters in one ROI are fitted as
one), which is the regime the conditional diffusion model is for.

Per frame (camera ADU -> photons above offset with the camera model):
1. background: the frame's median (photons per pixel; emitters are sparse where this baseline
   is meant to work);
2. candidates: local maxima (3 x 3) of the background-subtracted frame smoothed by a Gaussian of
   the PSF's sigma, above ``threshold_sigma`` x the smoothed noise (sqrt of the background plus
   read-noise variance, divided by 2 sqrt(pi) sigma_px, the noise gain of that filter);
3. a ``roi_px`` square ROI around each candidate, shifted inside the frame at its borders;
4. :func:`factory.smlm.fit.fit_mle` on all ROIs of all frames at once; a fit is kept when it
   converged, its photons exceed ``min_photons``, it was not clipped to the ROI's edge and it
   stays within one pixel of its candidate
   (a fit that ran off to a neighbour's spot is that neighbour's); of two kept fits closer than
   half a pixel, the brighter stays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from factory.errors import FactoryError
from factory.smlm.camera import CameraModel
from factory.smlm.crlb import default_roi_px
from factory.smlm.fit import fit_mle


@dataclass(frozen=True)
class DetectConfig:
    threshold_sigma: float = 5.0  # candidate threshold, in units of the smoothed noise
    min_photons: float = 30.0  # fits dimmer than this are dropped
    roi_px: int | None = None  # None: crlb.default_roi_px(psf, pixel)

    def check(self) -> None:
        if not (math.isfinite(self.threshold_sigma) and self.threshold_sigma > 0):
            raise FactoryError(f"threshold_sigma must be positive, got {self.threshold_sigma}.")
        if not (math.isfinite(self.min_photons) and self.min_photons >= 0):
            raise FactoryError(f"min_photons must be >= 0, got {self.min_photons}.")
        if self.roi_px is not None and self.roi_px < 3:
            raise FactoryError(f"roi_px must be at least 3, got {self.roi_px}.")


@dataclass(frozen=True)
class Localizations:
    """One frame's kept fits: (n, 2) (x, y) nm from the frame's top-left corner, (n,) photons, (n,) background."""

    xy_nm: np.ndarray
    photons: np.ndarray
    background: np.ndarray


def candidates(photons: np.ndarray, psf_sigma_px: float, read_var_photons: float, threshold_sigma: float) -> np.ndarray:
    """(n, 2) (row, col) candidate pixels of one (h, w) frame in photons above offset (module docstring, steps 1-2)."""
    bg = max(float(np.median(photons)), 0.0)
    smooth = ndimage.gaussian_filter(photons - bg, psf_sigma_px, mode="nearest")
    noise = math.sqrt(bg + read_var_photons) / (2 * math.sqrt(math.pi) * psf_sigma_px)
    is_max = (smooth == ndimage.maximum_filter(smooth, size=3, mode="constant", cval=-np.inf))
    return np.argwhere(is_max & (smooth > threshold_sigma * max(noise, 1e-9)))


def detect_fit(frames_adu: np.ndarray, psf_sigma_nm: float, pixel_nm: float, camera: CameraModel = CameraModel(),
               cfg: DetectConfig = DetectConfig()) -> list[Localizations]:
    """Localize every frame of an (F, h, w) ADU stack (module docstring); one :class:`Localizations` per frame."""
    cfg.check()
    frames = np.asarray(frames_adu, np.float64)
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise FactoryError(f"expected an (F, h, w) stack of frames, got shape {frames.shape}.")
    k = cfg.roi_px or default_roi_px(psf_sigma_nm, pixel_nm)
    F, h, w = frames.shape
    if k > min(h, w):
        raise FactoryError(f"the {k} px ROI does not fit in {h}x{w} px frames.")
    sigma_px = psf_sigma_nm / pixel_nm
    photons = (camera.electrons(frames) - camera.spurious_charge) / camera.qe  # (F, h, w) above offset
    read_var = float(np.mean(camera.input_read_var_e2)) / camera.qe**2
    owner, corner, cand = [], [], []
    for f in range(F):
        for r, c in candidates(photons[f], sigma_px, read_var, cfg.threshold_sigma):
            r0, c0 = min(max(r - k // 2, 0), h - k), min(max(c - k // 2, 0), w - k)
            owner.append(f)
            corner.append((r0, c0))
            cand.append((r, c))
    out = [Localizations(np.zeros((0, 2)), np.zeros(0), np.zeros(0)) for _ in range(F)]
    if not owner:
        return out
    owner, corner, cand = np.array(owner), np.array(corner), np.array(cand)
    rois = np.stack([frames[f, r0:r0 + k, c0:c0 + k] for f, (r0, c0) in zip(owner, corner)])  # (n, k, k) ADU
    fit = fit_mle(rois, psf_sigma_nm, pixel_nm, camera)
    x = fit.x_nm + corner[:, 1] * pixel_nm
    y = fit.y_nm + corner[:, 0] * pixel_nm
    near = (np.abs(x / pixel_nm - (cand[:, 1] + 0.5)) <= 1.0) & (np.abs(y / pixel_nm - (cand[:, 0] + 0.5)) <= 1.0)
    inside = (np.minimum(fit.x_nm, fit.y_nm) > 0) & (np.maximum(fit.x_nm, fit.y_nm) < k * pixel_nm)  # not clipped
    keep = fit.converged & (fit.photons > cfg.min_photons) & near & inside
    for f in range(F):
        idx = np.nonzero(keep & (owner == f))[0]
        idx = idx[np.argsort(-fit.photons[idx])]  # brightest first
        chosen: list[int] = []
        for i in idx:
            if all(math.hypot(x[i] - x[j], y[i] - y[j]) >= pixel_nm / 2 for j in chosen):
                chosen.append(i)
        chosen_a = np.array(sorted(chosen), dtype=np.int64)
        out[f] = Localizations(np.stack([x[chosen_a], y[chosen_a]], axis=1), fit.photons[chosen_a],
                               fit.background[chosen_a])
    return out
