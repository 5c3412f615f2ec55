"""Localization training data: SMLM frame stacks drawn from an HR density, with ground truth.

    from factory.smlm import SmlmConfig, CameraMaps, simulate_sample
    cfg = SmlmConfig.load("smlm.toml")                     # or SmlmConfig(...), SmlmConfig.defaults()
    maps = CameraMaps.draw(cfg, run_seed, (h, w))          # sCMOS maps once per run (None without)
    params = cfg.draw(rng)                                 # one sample's values, its own generator
    s = simulate_sample(hr, hr_pixel_nm, params, rng, sample_id=i, camera_maps=maps)
    s.frames, s.kde, s.emitters, s.stats                   # (F, h, w) uint16, (F, H, W) float32, table, dict

Coordinates everywhere: x along columns, y along rows, in nm from the top-left corner of the
field; pixel (r, c) of a grid of pitch p covers x in [c p, (c+1) p), y in [r p, (r+1) p).

Modules in the order the data flows: ``params``/``config`` (values and ranges), ``emitters``
(labels: Poisson point process on the density), ``blinking`` (on/off/bleached chain, exact
on-time per frame), ``psf`` (pixel-integrated Gaussian), ``frames`` (expected image, background,
camera), ``camera`` (noise model, sCMOS maps), ``kde`` (targets), ``crlb`` (Cramér-Rao bound),
``fit`` (MLE baseline), ``detect`` (the baseline on whole frames: detect, cut ROIs, fit), ``exports`` (emitter table schema, ThunderSTORM and DECODE tables),
``simulate`` (the per-sample stage).
"""
from factory.smlm.camera import CameraMaps, CameraModel
from factory.smlm.config import SmlmConfig
from factory.smlm.crlb import Crlb, crlb, emitter_crlb
from factory.smlm.detect import DetectConfig, Localizations, detect_fit
from factory.smlm.fit import FitResult, fit_mle
from factory.smlm.frames import expected_frames
from factory.smlm.params import CameraMapsKind, SmlmParams
from factory.smlm.simulate import SmlmSample, simulate_sample

__all__ = ["CameraMaps", "CameraMapsKind", "CameraModel", "Crlb", "DetectConfig", "FitResult", "Localizations", "SmlmConfig", "SmlmParams", "SmlmSample",
           "crlb", "detect_fit", "emitter_crlb", "expected_frames", "fit_mle", "simulate_sample"]
