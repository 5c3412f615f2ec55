"""Restore SMLM frames: K posterior KDE samples per frame -> mean, per-pixel std, localizations with uncertainty.

For frame f (0-based index in the input stack), sample k draws its noise from
``seeding.restore_generator(seed, f, k)``: the same seed gives the same bytes, the K
samples of a frame differ, and a frame's result does not depend on which other frames
are restored with it (beyond floating-point batching effects).

Per frame:
- ``mean``: the posterior mean KDE, (H, W) float32, emitters per HR pixel;
- ``std``: the per-pixel standard deviation across the K samples (ddof = 1; NaN for K = 1);
- localizations: peaks of the mean KDE above ``threshold`` x an isolated emitter's peak
  (:func:`factory.localize.find_peaks`); each one's uncertainty is the spread of the
  positions of the peaks matched to it in the K single samples (optimal assignment within
  ``match_radius_nm``): sqrt((var_x + var_y) / 2) with ddof = 1, the per-axis RMS (nm, NaN
  when fewer than 2 samples have it); ``detected`` is the fraction of samples that have it;
  photons from the camera frame (:func:`factory.localize.fit_photons` with the model's PSF
  width, divided by the camera QE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from factory import localize
from factory.diffusion.checkpoint import Checkpoint
from factory.diffusion.posterior import sample_kde
from factory.diffusion.sampler_config import SamplerConfig
from factory.errors import FactoryError
from factory.normalize import camera_electrons
from factory.seeding import restore_generator


@dataclass(frozen=True)
class Camera:
    """The camera parameters that turn ADU into photo-electrons above offset (the model's input units)."""

    offset_adu: float = 100.0
    gain_e_per_adu: float = 0.5  # photo-electrons per ADU
    em_gain: float = 1.0  # 1 = no EM register
    qe: float = 0.8  # photo-electrons per photon (intensities only)

    def check(self) -> None:
        from factory.optics.params import check_value

        for name in ("offset_adu", "gain_e_per_adu", "em_gain", "qe"):
            check_value(name, getattr(self, name))

    def electrons(self, adu: np.ndarray) -> np.ndarray:
        """(F, h, w) ADU -> float32 photo-electrons above offset: (ADU - offset) * gain / em_gain."""
        n = len(adu)
        return camera_electrons(adu, [self.offset_adu] * n, [self.gain_e_per_adu] * n, [self.em_gain] * n)

    @classmethod
    def load(cls, path) -> "Camera":
        """From an optics config file (.json/.toml); its four camera fields must be fixed values, not ranges."""
        from factory.optics import DegradationConfig

        config = DegradationConfig.load(path)
        values = {}
        for name in ("offset_adu", "gain_e_per_adu", "em_gain", "qe"):
            r = getattr(config, name)
            if not r.fixed:
                raise FactoryError(f"{path}: {name} is a range; a camera for restore needs one value.")
            values[name] = float(r.low)
        return cls(**values)


@dataclass(frozen=True)
class RestoreConfig:
    samples: int = 8  # K posterior samples per frame
    seed: int = 0
    batch_size: int = 16  # posterior samples per network call (rows = frames x samples)
    threshold: float = 0.5  # detection threshold in the mean KDE, fraction of an isolated emitter's peak
    match_radius_nm: float | None = None  # sample peak <-> mean peak pairing radius; None = half an LR pixel
    sampler: SamplerConfig | None = None  # None: the model's (chosen by its schedule search)
    bf16: bool = False

    def check(self) -> None:
        for name, value in (("--samples", self.samples), ("--batch-size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FactoryError(f"{name} must be at least 1, got {value}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FactoryError(f"--seed must be an integer >= 0, got {self.seed}.")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise FactoryError(f"--threshold must be a positive fraction of an emitter's peak, got {self.threshold}.")
        if self.match_radius_nm is not None and not (math.isfinite(self.match_radius_nm) and self.match_radius_nm > 0):
            raise FactoryError(f"--match-radius-nm must be a positive number of nm, got {self.match_radius_nm}.")


@dataclass(frozen=True)
class FrameResult:
    frame: int  # 0-based index in the input stack
    mean: np.ndarray  # (H, W) float32 posterior mean KDE, emitters per HR pixel
    std: np.ndarray  # (H, W) float32 per-pixel std across samples (NaN for K = 1)
    xy_nm: np.ndarray  # (n, 2) float64 localizations (x, y), nm from the frame's top-left corner
    uncertainty_nm: np.ndarray  # (n,) per-axis RMS spread across samples, nm (NaN: seen in < 2 samples)
    detected: np.ndarray  # (n,) fraction of the K samples in which the emitter was found
    photons: np.ndarray  # (n,) estimated photons (signal) per emitter


def check_frames(frames_e: np.ndarray) -> None:
    """One sentence unless frames are a finite (F, h, w) stack."""
    if frames_e.ndim != 3 or min(frames_e.shape) < 1:
        raise FactoryError(f"expected an (F, h, w) stack of frames, got shape {frames_e.shape}.")
    if not np.isfinite(frames_e).all():
        raise FactoryError("the frames hold NaN or infinite values.")


def _localize_frame(ckpt: Checkpoint, f: int, samples: np.ndarray, frame_e: np.ndarray, qe: float,
                    cfg: RestoreConfig) -> FrameResult:
    """Mean, std and localizations of one frame from its (K, H, W) samples."""
    geometry = ckpt.config.geometry
    K = len(samples)
    mean = samples.mean(axis=0)  # (H, W)
    std = samples.std(axis=0, ddof=1) if K > 1 else np.full_like(mean, np.nan)
    threshold = cfg.threshold * localize.isolated_peak(geometry.kde_sigma_px)
    xy_px, _ = localize.find_peaks(mean, threshold)
    xy = xy_px * geometry.hr_pixel_nm  # (n, 2) nm
    radius = cfg.match_radius_nm or geometry.lr_pixel_nm / 2
    seen = np.full((K, len(xy), 2), np.nan)  # (K, n, 2) position of emitter j in sample k
    for k in range(K):
        peaks_px, _ = localize.find_peaks(samples[k], threshold)
        m = localize.match(peaks_px * geometry.hr_pixel_nm, xy, radius)
        seen[k, m.true_index] = peaks_px[m.pred_index] * geometry.hr_pixel_nm
    found = np.isfinite(seen[..., 0])[..., None]  # (K, n, 1)
    count = found.sum(axis=0)  # (n, 1) samples that have emitter j
    centre = np.where(found, seen, 0.0).sum(axis=0) / np.maximum(count, 1)  # (n, 2)
    var = np.where(found, (seen - centre) ** 2, 0.0).sum(axis=0) / np.maximum(count - 1, 1)  # (n, 2), ddof = 1
    count = count[:, 0]
    uncertainty = np.where(count >= 2, np.sqrt(var.mean(axis=1)), np.nan)  # (n,)
    electrons, _ = localize.fit_photons(frame_e, xy, geometry.lr_pixel_nm, geometry.psf_sigma_nm)
    return FrameResult(f, mean.astype(np.float32), std.astype(np.float32), xy, uncertainty,
                       count / K, electrons / qe)


def restore(ckpt: Checkpoint, frames_e: np.ndarray, cfg: RestoreConfig, qe: float = 1.0,
            device: torch.device | str = "cpu", on_step: Callable[[], None] | None = None) -> Iterator[FrameResult]:
    """Restore (F, h, w) photo-electron frames, yielding one :class:`FrameResult` per frame in order.

    ``qe`` converts the fitted photo-electrons to photons. Memory: one batch of samples
    and the samples of the frames it touches, whatever F is.
    """
    cfg.check()
    check_frames(frames_e)
    if not (math.isfinite(qe) and 0 < qe <= 1):
        raise FactoryError(f"the camera QE must be in (0, 1], got {qe}.")
    K = cfg.samples
    rows = [(f, k) for f in range(len(frames_e)) for k in range(K)]  # frame-major
    pending: dict[int, list[np.ndarray]] = {}
    for start in range(0, len(rows), cfg.batch_size):
        batch = rows[start:start + cfg.batch_size]
        x = torch.from_numpy(np.stack([frames_e[f] for f, _ in batch]).astype(np.float32))  # (R, h, w)
        kde = sample_kde(ckpt.model, ckpt.config, x, [restore_generator(cfg.seed, f, k) for f, k in batch],
                         cfg.sampler, None, device, cfg.bf16, on_step)  # (R, H, W)
        for (f, _), sample in zip(batch, kde):
            pending.setdefault(f, []).append(sample)
        for f in sorted(pending):
            if len(pending[f]) == K:
                yield _localize_frame(ckpt, f, np.stack(pending.pop(f)), frames_e[f], qe, cfg)
