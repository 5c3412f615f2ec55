"""The per-sample SMLM stage: HR density -> labels -> blinking -> camera frames, emitter table, KDE.

    s = simulate_sample(hr, hr_pixel_nm, params, rng, sample_id=i, camera_maps=maps)
    s.frames    (F, h, w) uint16 ADU                 what the camera records
    s.kde       (F, H, W) float32                    unit-mass Gaussians at the active emitters, HR grid
    s.emitters  pyarrow.Table (schemas/emitters.v1.json), one row per (emitter, frame) it emits in
    s.stats     per-sample figures for the manifest (STATS_FIELDS)

Stages, each drawing from ``rng`` in this order: labels (``emitters``: Poisson process on the
HR density), per-label brightness and blinking (``blinking``), camera noise (``frames``). The
background field comes from ``params.background_seed``; sCMOS maps are the run's
(``camera.CameraMaps``). Same (params, rng state, hr, maps) -> the same bytes.

Coordinates: x along columns, y along rows, nm from the top-left corner of the field; HR pixel
(r, c) covers x in [c p, (c+1) p), y in [r p, (r+1) p) (p = hr_pixel_nm), camera pixel (r, c) the
same with a = downsample x p; the camera grid covers exactly the HR field.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from factory.errors import FactoryError
from factory.smlm.blinking import blink, draw_brightness
from factory.smlm.camera import CameraMaps, CameraModel
from factory.smlm.crlb import emitter_crlb
from factory.smlm.emitters import check_density, draw_labels
from factory.smlm.exports import emitters_table
from factory.smlm.frames import background_map, camera_frames, expected_frames
from factory.smlm.kde import kde_frames
from factory.smlm.params import CameraMapsKind, SmlmParams

# (name, Arrow type, unit, description) of every stats entry, in order.
STATS_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("n_labels", "int64", "", "Labels drawn from the HR density (emitters that may ever blink)."),
    ("n_emitter_frames", "int64", "", "Rows of the emitter table: (emitter, frame) pairs with on-time > 0."),
    ("field_um2", "float64", "um^2", "Area of the field of view."),
    ("emitters_per_frame", "float64", "", "Mean number of active emitters per frame."),
    ("active_per_um2", "float64", "per um^2 per frame", "Mean active emitters per um^2 per frame (density regime)."),
    ("photons_per_emitter_frame", "float64", "photons", "Mean photons of an emitter in a frame it is active in (NaN if none)."),
    ("bleached_fraction", "float64", "", "Fraction of labels bleached before the end of the stack (NaN if no labels)."),
    ("crlb_median_nm", "float64", "nm", "Median per-axis CRLB sqrt((crlb_x^2 + crlb_y^2) / 2) over the rows (NaN if none)."),
    ("frames_mean_adu", "float32", "ADU", "Mean of the frame stack."),
    ("frames_max_adu", "int32", "ADU", "Maximum of the frame stack."),
)


@dataclass(frozen=True)
class SmlmSample:
    """One sample's outputs (module docstring)."""

    frames: np.ndarray  # (F, h, w) uint16 ADU
    kde: np.ndarray  # (F, H, W) float32
    emitters: pa.Table  # schemas/emitters.v1.json
    stats: dict[str, float | int]


def _check_grid(hr: np.ndarray, hr_pixel_nm: float, downsample: int) -> tuple[int, int]:
    if not (isinstance(hr_pixel_nm, numbers.Real) and math.isfinite(hr_pixel_nm) and hr_pixel_nm > 0):
        raise FactoryError(f"hr_pixel_nm must be > 0 nm, got {hr_pixel_nm!r}.")
    height, width = hr.shape
    if height < downsample or width < downsample or height % downsample or width % downsample:
        raise FactoryError(f"downsample {downsample} does not divide the HR image size {height}x{width}.")
    return height // downsample, width // downsample


def simulate_sample(hr: np.ndarray, hr_pixel_nm: float, params: SmlmParams, rng: np.random.Generator, *,
                    sample_id: int = 0, camera_maps: CameraMaps | None = None) -> SmlmSample:
    """Simulate one sample's SMLM stack from its HR density (H, W) >= 0 (module docstring)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")
    if (camera_maps is None) != (params.camera_maps is CameraMapsKind.NONE):
        raise FactoryError(f"the params ask for camera_maps {params.camera_maps.value!r} but "
                           f"{'no' if camera_maps is None else 'sCMOS'} maps were given; draw them with CameraMaps.draw.")
    density = check_density(hr)  # (H, W) float64
    shape_lr = _check_grid(density, hr_pixel_nm, params.downsample)
    pixel_nm = params.downsample * hr_pixel_nm  # camera pixel
    labels = draw_labels(density, hr_pixel_nm, params.labels_per_um2, rng)
    brightness = draw_brightness(len(labels), params, rng)  # (n,) photons per full on-frame
    blinks = blink(len(labels), params, rng)
    x_nm, y_nm = labels.x_nm[blinks.emitter], labels.y_nm[blinks.emitter]  # (R,) each
    photons = brightness[blinks.emitter] * blinks.on_fraction  # (R,)
    background = background_map(params, shape_lr, pixel_nm)  # (h, w) photons per pixel per frame
    expected = expected_frames(x_nm, y_nm, photons, blinks.frame, params.n_frames, shape_lr, pixel_nm,
                               params.psf_sigma_nm, background)  # (F, h, w) photons
    frames = camera_frames(expected, params, rng, camera_maps)  # (F, h, w) uint16
    kde = kde_frames(x_nm, y_nm, blinks.frame, params.n_frames, density.shape, hr_pixel_nm, params.kde_sigma_nm)
    camera = CameraModel.from_params(params) if camera_maps is None else camera_maps.camera_model(params)
    bound = emitter_crlb(x_nm, y_nm, photons, background, params.psf_sigma_nm, pixel_nm, camera)
    local_bg = background[(y_nm // pixel_nm).astype(np.int64), (x_nm // pixel_nm).astype(np.int64)]  # (R,)
    table = emitters_table({"sample_id": np.full(len(x_nm), sample_id), "frame": blinks.frame,
                            "emitter_id": blinks.emitter, "x_nm": x_nm, "y_nm": y_nm, "photons": photons,
                            "background": local_bg, "on_fraction": blinks.on_fraction,
                            "crlb_x_nm": bound.x_nm, "crlb_y_nm": bound.y_nm})
    field_um2 = density.size * hr_pixel_nm**2 / 1e6
    per_axis = np.sqrt(0.5 * (bound.x_nm**2 + bound.y_nm**2))
    stats = {"n_labels": len(labels), "n_emitter_frames": len(x_nm), "field_um2": field_um2,
             "emitters_per_frame": len(x_nm) / params.n_frames,
             "active_per_um2": len(x_nm) / params.n_frames / field_um2,
             "photons_per_emitter_frame": float(photons.mean()) if len(x_nm) else math.nan,
             "bleached_fraction": blinks.n_bleached / len(labels) if len(labels) else math.nan,
             "crlb_median_nm": float(np.median(per_axis)) if len(x_nm) else math.nan,
             "frames_mean_adu": float(frames.mean()), "frames_max_adu": int(frames.max())}
    return SmlmSample(frames=frames, kde=kde, emitters=table, stats=stats)
