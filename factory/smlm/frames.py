"""Image formation: emitters -> expected photons per camera pixel per frame -> camera frames in ADU.

    E[f, r, c] = sum_{rows i in frame f} N_i P_r(y_i) P_c(x_i) + b[r, c]          photons
    frames     = camera(E)                                                        uint16 ADU

P is the pixel-integrated Gaussian PSF (``psf``; Smith et al. 2010) evaluated at each emitter's
continuous position on the camera grid (pixel a = downsample x HR pixel), N_i its photons in
that frame (brightness x on-fraction, ``blinking``) and b the sample's background, mean
``background_photons`` per pixel and frame with the smooth log-normal structure of
``factory.optics.background`` (the same field in every frame of a stack). The camera is
``factory.optics.camera.detect``: Poisson(qe E + spurious charge), the EM register, read noise,
gain, offset, rounding and clipping to the bit depth, with per-pixel read-noise / gain / offset
maps for an sCMOS camera (``camera.CameraMaps``).

Coordinates: x along columns, y along rows, nm from the top-left corner of the field; camera
pixel (r, c) covers x in [c a, (c+1) a), y in [r a, (r+1) a).
"""
from __future__ import annotations

import numpy as np

from factory.errors import FactoryError
from factory.optics.background import background_photons
from factory.optics.camera import detect
from factory.smlm.camera import CameraMaps
from factory.smlm.params import SmlmParams
from factory.smlm.psf import render_spots


def background_map(params: SmlmParams, shape: tuple[int, int], pixel_nm: float) -> np.ndarray:
    """(h, w) float64 background photons per camera pixel per frame (mean params.background_photons)."""
    field = background_photons(params.optics(), (1, *shape), pixel_nm)  # (1, h, w) or (1, 1, 1)
    return np.broadcast_to(field[0], shape).astype(np.float64)


def expected_frames(x_nm: np.ndarray, y_nm: np.ndarray, photons: np.ndarray, frame: np.ndarray, n_frames: int,
                    shape: tuple[int, int], pixel_nm: float, psf_sigma_nm: float,
                    background: float | np.ndarray = 0.0) -> np.ndarray:
    """(n_frames, h, w) float64 noise-free expected photons per camera pixel (module docstring).

    x_nm, y_nm, photons, frame: (R,) one row per emitter and frame in which it emits;
    background: photons per pixel per frame, a number or an (h, w) map.
    """
    signal = render_spots(x_nm, y_nm, photons, frame, n_frames, shape, pixel_nm, psf_sigma_nm)  # (F, h, w)
    signal += np.asarray(background, dtype=np.float64)
    return signal


def camera_frames(expected: np.ndarray, params: SmlmParams, rng: np.random.Generator,
                  camera_maps: CameraMaps | None = None) -> np.ndarray:
    """(F, h, w) expected photons -> (F, h, w) uint16 ADU, all noise from rng."""
    if camera_maps is None:
        return detect(expected, params.optics(), rng, spurious_charge=params.spurious_charge)
    if camera_maps.shape != expected.shape[-2:]:
        raise FactoryError(f"the camera maps are {camera_maps.shape[0]}x{camera_maps.shape[1]} pixels but the frames "
                           f"are {expected.shape[-2]}x{expected.shape[-1]}.")
    read, gain, offset = camera_maps.physical(params)  # (h, w) each
    return detect(expected, params.optics(), rng, spurious_charge=params.spurious_charge, read_noise_e=read,
                  gain_e_per_adu=gain, offset_adu=offset)
