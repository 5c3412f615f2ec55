"""Sub-pixel registration of two images of one field: estimate the shift, remove it, crop to the common region.

The shift comes from phase correlation refined by the upsampled DFT of Guizar-Sicairos, Thurman &
Fienup 2008 (Opt. Lett. 33:156), as implemented by ``skimage.registration.phase_cross_correlation``
(plain cross-correlation, ``normalization=None``: whitening the spectrum, the "phase" variant, lets
the noise at high frequencies weigh as much as the structure: on sparse blurred structure with
noise, 256 px, shifts up to 3 px, its mean error was 0.069 px against 0.018 px without whitening). Both images are mean-subtracted and Tukey-windowed first
(:func:`factory.metrics.frc.windowed`), so that their borders do not pull the peak to zero shift.

Convention: ``shift_px = (dy, dx)`` is where the moving image's content lies relative to the
reference's, ``moving(y, x) = reference(y - dy, x - dx)``. It is removed by the Fourier shift
theorem (``scipy.ndimage.fourier_shift`` by -d), which keeps every spatial frequency's amplitude
(an interpolating shift would low-pass the image and lower its FRC); the rows and columns that
the shift wraps around (ceil |d| on the side the content moved away from) are cropped from both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import fourier_shift

from factory.errors import FactoryError
from factory.metrics.frc import WINDOW_ALPHA, windowed

UPSAMPLE = 100  # sub-pixel precision of the shift estimate: 1/100 px


@dataclass(frozen=True)
class Registered:
    """The pair on its common region: ``moving`` shifted onto ``reference``, both (H', W') float64."""

    moving: np.ndarray
    reference: np.ndarray
    shift_px: tuple[float, float]  # (dy, dx) of the moving image's content relative to the reference
    crop: tuple[slice, slice]  # the common region in the reference's pixel coordinates


def estimate_shift(moving: np.ndarray, reference: np.ndarray, upsample: int = UPSAMPLE) -> tuple[float, float]:
    """(dy, dx) in pixels with moving(y, x) = reference(y - dy, x - dx), to 1/upsample px."""
    from skimage.registration import phase_cross_correlation

    if moving.shape != reference.shape or moving.ndim != 2:
        raise FactoryError(f"registration needs two 2-D images of one shape, got {moving.shape} and {reference.shape}.")
    ref_w = windowed(np.asarray(reference, np.float64)[None], WINDOW_ALPHA)[0]
    mov_w = windowed(np.asarray(moving, np.float64)[None], WINDOW_ALPHA)[0]
    if not (np.any(ref_w) and np.any(mov_w)):
        raise FactoryError("cannot register a constant image (it has no structure to align).")
    shift, _, _ = phase_cross_correlation(ref_w, mov_w, upsample_factor=upsample, normalization=None)
    return float(-shift[0]), float(-shift[1])  # skimage returns the shift that registers moving: -d


def unshift(moving: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Move the content back by -shift_px with the Fourier shift theorem: (H, W) -> (H, W) float64 (periodic)."""
    spectrum = fourier_shift(np.fft.fft2(np.asarray(moving, np.float64)), (-shift_px[0], -shift_px[1]))
    return np.fft.ifft2(spectrum).real


def valid_region(shape: tuple[int, int], shift_px: tuple[float, float]) -> tuple[slice, slice]:
    """Rows and columns that hold no wrapped-around content after :func:`unshift`."""
    out = []
    for n, d in zip(shape, shift_px):
        m = math.ceil(abs(d) - 1e-9)
        out.append(slice(0, n - m) if d > 0 else slice(m, n))
    return out[0], out[1]


def register(moving: np.ndarray, reference: np.ndarray, estimate: bool = True) -> Registered:
    """Estimate (unless ``estimate`` is False: shift 0) and remove the shift, then crop both images to the common region."""
    moving, reference = np.asarray(moving, np.float64), np.asarray(reference, np.float64)
    shift = estimate_shift(moving, reference) if estimate else (0.0, 0.0)
    aligned = unshift(moving, shift) if any(shift) else moving
    crop = valid_region(reference.shape, shift)
    if min(crop[0].stop - crop[0].start, crop[1].stop - crop[1].start) < 8:
        raise FactoryError(f"the images are shifted by {shift[0]:.1f}, {shift[1]:.1f} px, which leaves less than 8x8 px in common.")
    return Registered(aligned[crop], reference[crop], shift, crop)
