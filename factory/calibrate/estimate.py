"""``factory calibrate``: a degradation config estimated from the user's own widefield image.

Order: camera (offset, gain, read noise: :mod:`factory.calibrate.camera`) -> background map and
its parameters (:mod:`.background`) -> PSF width (:mod:`.psf`, from the image's own spots and
filaments, or fitted against a registered SR reference) -> signal photons -> the config on the
generator's grid.

**Photons.** With ``photon_scale = peak`` the config's ``photons`` is the expected signal at the
brightest LR pixel of each training image, i.e. of each tile of the LR size (``hr_size / k``
camera pixels): the range written is the 10-90 % range of the tiles' peak signal (tiles whose
peak stands 8 noise sd above the background), log-uniform. The table also gives the field's
peak. The expected signal is the fitted reference model when there is a reference, else the
image minus its background (for one frame the noisy peak is biased up by about one noise sd,
3 % at 1000 photons). With ``density`` (needs a reference), ``photons`` is the fitted amplitude
per unit of reference density per HR pixel, the reference being binned to the HR pixel and
scaled like a training image (99.9th percentile -> 1).

**Grid.** The generator's LR pixel is k x ``hr_pixel_nm`` with k = round(pixel_nm / hr_pixel_nm).
When that is not the camera's pixel, per-pixel photon numbers are scaled by the area ratio and a
note says so. What cannot be measured is assumed and noted: QE (only qe x photons is seen),
no EM gain, 16-bit ADC.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve

from factory import images
from factory.calibrate import background as bgmod
from factory.calibrate.camera import (MIN_TEMPORAL_FRAMES, NEIGHBOURS, CameraFit, Moments, dark_level, fit_camera,
                                      ill_conditioned, spatial_moments, temporal_moments)
from factory.calibrate.psf import PsfEstimate, fit_reference, sigma_from_structures
from factory.calibrate.report import Calibration, Estimate
from factory.errors import FactoryError
from factory.optics import DegradationConfig, PhotonScale, Range
from factory.optics.contrast import contrast_stats, tiles

PEAK_SNR = 8.0  # a tile counts as holding structure when its peak signal exceeds this many noise sd


@dataclass(frozen=True)
class CalibrateConfig:
    widefield: Path  # 2-D frame or (N, H, W) repeated frames of a static field, ADU
    reference: Path | None = None  # SR image of the same field (grid an integer factor finer)
    pixel_nm: float | None = None  # widefield pixel, nm (None: from the TIFF)
    reference_pixel_nm: float | None = None
    dark: Path | None = None  # dark frame(s): offset and read noise
    flat: Path | None = None  # >= 6 evenly lit frames: more photon-transfer levels
    hr_pixel_nm: float = 40.0  # the generator's HR pixel (the shipped model's)
    hr_size: int = 64  # the generator's HR side, px: the LR tile is hr_size / k
    qe: float = 0.8  # assumed (not measurable from ADU)
    read_noise_e: float = 1.6  # assumed only when the frames cannot separate it from the offset
    photon_scale: PhotonScale = PhotonScale.PEAK

    def __post_init__(self) -> None:
        from factory.optics.params import parse_photon_scale

        object.__setattr__(self, "photon_scale", parse_photon_scale(self.photon_scale))
        for name in ("pixel_nm", "reference_pixel_nm", "hr_pixel_nm", "qe", "read_noise_e"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0 and (value > 0 or name == "read_noise_e")):
                raise FactoryError(f"--{name.replace('_', '-')} must be > 0, got {value}.")
        if self.qe > 1:
            raise FactoryError(f"--qe must be in (0, 1], got {self.qe}.")
        if self.hr_size < 8:
            raise FactoryError(f"--hr-size must be at least 8 px, got {self.hr_size}.")


def _integer(ratio: float) -> int | None:
    k = round(ratio)
    return k if k >= 1 and abs(ratio - k) <= 0.01 * k else None


def _read(path: Path, what: str) -> images.ImageStack:
    stack = images.read_stack(path)
    if not np.isfinite(stack.data).all():
        raise FactoryError(f"{path}: the {what} holds NaN or infinite values.")
    return stack


def _camera(cfg: CalibrateConfig, frames: np.ndarray, background: np.ndarray | None, usable: np.ndarray | None,
            notes: list[str]) -> tuple[CameraFit, str]:
    """Camera fit from dark/flat/temporal/spatial moments (see factory.calibrate.camera)."""
    dark = dark_level(_read(cfg.dark, "dark frame").data) if cfg.dark else None
    parts: list[Moments] = []
    how = []
    if cfg.flat:
        flat = _read(cfg.flat, "flat stack").data
        if flat.shape[0] < MIN_TEMPORAL_FRAMES:
            raise FactoryError(f"{cfg.flat}: a flat stack needs at least {MIN_TEMPORAL_FRAMES} frames, got {flat.shape[0]}.")
        parts.append(temporal_moments(flat))
        how.append(f"flat stack ({flat.shape[0]} frames)")
    if len(frames) >= MIN_TEMPORAL_FRAMES:
        parts.append(temporal_moments(frames))
        how.append(f"temporal photon transfer ({len(frames)} frames)")
    else:
        parts += [spatial_moments(f, background, usable) for f in frames]
        how.append("background residuals of " + ("one frame" if len(frames) == 1 else f"{len(frames)} frames"))
    moments = Moments.concat(parts)
    offset = (dark[0], dark[1]) if dark else None
    read_var = (dark[2], dark[3]) if dark else None
    fit = fit_camera(moments, offset, read_var)
    if dark:
        how.append(f"dark ({cfg.dark.name})")
    if ill_conditioned(fit) and not dark:
        fit = fit_camera(moments, read_noise_e=cfg.read_noise_e)
        notes.append(f"the frames do not separate offset, gain and read noise; read noise assumed {cfg.read_noise_e:g} e- "
                     f"(give --dark or >= {MIN_TEMPORAL_FRAMES} frames to measure it).")
        how.append(f"read noise assumed {cfg.read_noise_e:g} e-")
    return fit, ", ".join(how)


def calibrate(cfg: CalibrateConfig) -> Calibration:
    """Estimate the optics of ``cfg.widefield`` (see the module docstring)."""
    wf = _read(cfg.widefield, "widefield image")
    pixel_nm = cfg.pixel_nm or wf.pixel_nm
    if pixel_nm is None:
        raise FactoryError(f"{cfg.widefield} records no pixel size; pass --pixel-nm.")
    frames = wf.data.astype(np.float64)  # (N, H, W) ADU
    mean = frames.mean(axis=0)  # (H, W)
    notes: list[str] = []
    k = max(1, round(pixel_nm / cfg.hr_pixel_nm))
    lr_nm = k * cfg.hr_pixel_nm
    if abs(lr_nm - pixel_nm) > 0.01 * pixel_nm:
        notes.append(f"camera pixel {pixel_nm:g} nm is not a multiple of the HR pixel {cfg.hr_pixel_nm:g} nm: the config uses "
                     f"downsample {k} (LR pixel {lr_nm:g} nm) and per-pixel photons scaled by the area ratio {(lr_nm / pixel_nm) ** 2:.3f}.")
    area = (lr_nm / pixel_nm) ** 2
    tile_px = max(4, round(cfg.hr_size / k * lr_nm / pixel_nm))  # one training image's LR side, in camera px

    # first-pass noise and background (for the mask the single-frame camera fit needs)
    resid = frames[0] - convolve(frames[0], NEIGHBOURS, mode="reflect")
    noise0 = 1.4826 * float(np.median(np.abs(resid - np.median(resid)))) / math.sqrt(1.125)
    window = bgmod.default_window_px(pixel_nm)
    first = bgmod.background_map(frames[0], max(noise0, 1e-3), window)
    cam, cam_how = _camera(cfg, frames, first.adu, ~first.signal, notes)
    adu_per_photon = cam.gain_adu_per_e * cfg.qe

    # the mask threshold uses one frame's noise even for the mean of a stack: at the mean's lower noise the
    # background's own bumps were masked as structure (54 % of the field, map 9 % low, in a 20-frame test)
    noise_sd = math.sqrt(float(np.median(cam.variance_adu2(first.adu))))
    bg = bgmod.background_map(mean, noise_sd, window)
    variance = cam.variance_adu2(mean) / len(frames)  # (H, W) noise variance of the mean image
    bgest = bgmod.describe(bg, cam.offset_adu, adu_per_photon, pixel_nm, tile_px)

    amplitude = None
    if cfg.reference is not None:
        signal, psf, amplitude = _with_reference(cfg, mean - bg.adu, pixel_nm, k)
    else:
        if cfg.photon_scale is PhotonScale.DENSITY:
            raise FactoryError("--photon-scale density needs --reference: photons per unit density are measured against the SR image.")
        signal = mean - bg.adu
        psf = sigma_from_structures(mean, bg.adu, variance)
    sigma_nm, sd_sigma_nm = psf.sigma_px * pixel_nm, psf.sd_sigma_px * pixel_nm

    rel_g = cam.sd_gain_adu_per_e / cam.gain_adu_per_e
    photons, photon_est, peak = _photons(cfg, signal / adu_per_photon, np.sqrt(variance) / adu_per_photon, tile_px, area,
                                         None if amplitude is None else amplitude / adu_per_photon, rel_g, notes)

    b_lo, b_hi = np.percentile(bgest.tile_means_photons, (10, 90)) * area
    bg_sigma = bgest.sigma_nm if math.isfinite(bgest.sigma_nm) else 2 * max(mean.shape) * pixel_nm
    if not math.isfinite(bgest.sigma_nm):
        notes.append("the background is correlated over the whole field; background_sigma_nm set to twice the field.")
    config = DegradationConfig(
        downsample=k, photon_scale=cfg.photon_scale, psf_sigma_nm=round(sigma_nm, 2), photons=photons,
        background_photons=Range(round(float(b_lo), 3), round(float(b_hi), 3)),
        background_variation=round(min(bgest.variation, 5.0), 4), background_sigma_nm=round(bg_sigma, 1),
        qe=cfg.qe, read_noise_e=round(cam.read_noise_e, 4), em_gain=1.0,
        gain_e_per_adu=round(cam.gain_e_per_adu, 5), offset_adu=round(max(cam.offset_adu, 0.0), 3), bit_depth=16)
    notes.append(f"assumed: QE {cfg.qe:g} (only QE x photons is measurable), no EM gain, 16-bit ADC.")
    if psf.method.startswith("spot"):
        notes.append("the PSF width from the image's own structures includes the structure's width in quadrature.")

    g_sd_e_per_adu = cam.sd_gain_adu_per_e / cam.gain_adu_per_e**2
    read_sd = cam.sd_read_var_adu2 / (2 * max(cam.read_noise_e, 1e-9) * cam.gain_adu_per_e**2)
    bg_sd = math.hypot(rel_g * bgest.mean_photons, cam.sd_offset_adu / adu_per_photon)
    estimates = [
        Estimate("offset_adu", cam.offset_adu, cam.sd_offset_adu, "ADU", "dark frames" if "offset_adu" in cam.fixed else cam_how),
        Estimate("gain_e_per_adu", cam.gain_e_per_adu, g_sd_e_per_adu, "e-/ADU", cam_how),
        Estimate("read_noise_e", cam.read_noise_e, None if "assumed" in cam_how else read_sd, "e- rms", cam_how),
        Estimate("background_photons", bgest.mean_photons * area, bg_sd * area, "photons per LR px",
                 f"masked local mean, window {window} px; 10-90 % over tiles {b_lo:.2f}-{b_hi:.2f}"),
        Estimate("background_variation", bgest.variation, None, "", "std of log background (approx.)"),
        Estimate("background_sigma_nm", bgest.sigma_nm, None, "nm", "background autocorrelation (approx.)"),
        Estimate("psf_sigma_nm", sigma_nm, sd_sigma_nm, "nm", f"{psf.method} ({psf.fits})"),
        peak,
        photon_est,
    ]
    electrons = cam.electrons(frames[0])  # one frame, as a training LR image is
    c = contrast_stats(tiles(electrons, min(tile_px, *electrons.shape)))
    source = f"{Path(cfg.widefield).name} ({mean.shape[0]}x{mean.shape[1]} px at {pixel_nm:g} nm, {len(frames)} frame(s))"
    return Calibration(estimates, config, notes, {"median": c.median, "p10": c.p10, "p90": c.p90, "frames": c.frames}, source)


def _photons(cfg: CalibrateConfig, signal: np.ndarray, noise: np.ndarray, tile_px: int, area: float,
             per_density: float | None, rel_g: float, notes: list[str]) -> tuple[Range, Estimate, Estimate]:
    """The config's ``photons`` range and two table rows (the chosen definition, the field's peak) from the
    expected signal and its noise sd, both (H, W) photons per camera pixel (see the module docstring)."""
    peak_field = float(signal.max())
    peak_sd = math.hypot(float(noise.ravel()[np.argmax(signal)]), rel_g * peak_field)
    peak = Estimate("photons (field peak)", peak_field * area, peak_sd * area, "photons", "brightest expected LR pixel")
    if cfg.photon_scale is PhotonScale.DENSITY:
        value = round(float(per_density), 4)
        return Range(value, value), Estimate("photons (per unit density)", per_density, rel_g * per_density,
                                             "photons per HR px", "reference amplitude / (G qe)"), peak
    side = min(tile_px, *signal.shape)
    peaks = tiles(signal, side).max(axis=(1, 2))  # (T,) each tile's brightest expected pixel
    bright = peaks[peaks > PEAK_SNR * tiles(noise, side).max(axis=(1, 2))]
    if len(bright) < 3:
        notes.append("fewer than 3 tiles hold structure; photons fixed at the field's peak.")
        lo = hi = peak_field * area
    else:
        lo, hi = np.percentile(bright, (10, 90)) * area
    median = float(np.median(bright)) * area if len(bright) else peak_field * area
    return (Range(float(lo), float(hi), log=lo < hi),
            Estimate("photons (tile peaks)", median, None, "photons", f"10-90 %: {lo:.0f}-{hi:.0f} over {len(bright)} tiles of {side} px"),
            peak)


def _with_reference(cfg: CalibrateConfig, excess: np.ndarray, pixel_nm: float, k: int) -> tuple[np.ndarray, PsfEstimate, float | None]:
    """Fit the SR reference: (expected signal ADU (H, W), PSF in camera px, ADU per unit density per HR px or None
    when the reference could not be put on the generator's HR grid)."""
    ref = _read(cfg.reference, "reference")
    if ref.data.shape[0] != 1:
        raise FactoryError(f"{cfg.reference}: a stack of {ref.data.shape[0]} frames; the reference must be one 2-D image.")
    ref_nm = cfg.reference_pixel_nm or ref.pixel_nm
    if ref_nm is None:
        raise FactoryError(f"{cfg.reference} records no pixel size; pass --reference-pixel-nm.")
    m = _integer(pixel_nm / ref_nm)
    if m is None:
        raise FactoryError(f"the widefield pixel ({pixel_nm:g} nm) is not an integer multiple of the reference pixel "
                           f"({ref_nm:g} nm); resample the reference first.")
    n = _integer(cfg.hr_pixel_nm / ref_nm)
    on_hr = n is not None and abs(k * cfg.hr_pixel_nm - pixel_nm) <= 0.01 * pixel_nm
    if on_hr:  # the generator's grid: reference binned to the HR pixel and scaled like a training image
        grid, bin_m = images.normalize_unit(images.bin_sum(ref.data[0], n))[0], k
    else:
        grid, bin_m = ref.data[0] / max(float(np.percentile(ref.data[0], 99.9)), 1e-12), m
        if cfg.photon_scale is PhotonScale.DENSITY:
            raise FactoryError(f"--photon-scale density needs the HR pixel ({cfg.hr_pixel_nm:g} nm) to divide the camera pixel "
                               f"({pixel_nm:g} nm) and to be a multiple of the reference pixel ({ref_nm:g} nm).")
    grid_nm = pixel_nm / bin_m
    fit = fit_reference(excess, grid, bin_m, sigma0_px=100.0 / grid_nm, q_min=pixel_nm / 1000.0)
    psf = PsfEstimate(fit.psf.sigma_px / bin_m, fit.psf.sd_sigma_px / bin_m, fit.psf.fits, fit.psf.method)
    return fit.signal_adu, psf, (fit.amplitude_adu if on_hr else None)
