"""The localization target: a kernel density estimate of the active emitters per frame, on the HR grid.

    KDE[f, r, c] = sum_{emitters i active in frame f} P_r(y_i) P_c(x_i)

with P the pixel-integrated Gaussian of standard deviation ``kde_sigma_nm`` on the HR grid
(``psf.render_spots``): each active emitter contributes a unit-mass Gaussian, so away from
the borders a frame integrates to its number of active emitters, whatever its photons. This is
the Deep-STORM target (Nehme et al. 2018, Optica 5:458: a Gaussian of a fixed width at each true
position on a finer grid), here integrated over each HR pixel so that it stays exact when the
kernel is narrower than a pixel.

Coordinates: x along columns, y along rows, nm from the top-left corner of the field; HR pixel
(r, c) covers x in [c p, (c+1) p), y in [r p, (r+1) p).
"""
from __future__ import annotations

import numpy as np

from factory.smlm.psf import render_spots


def kde_frames(x_nm: np.ndarray, y_nm: np.ndarray, frame: np.ndarray, n_frames: int, shape: tuple[int, int],
               hr_pixel_nm: float, kde_sigma_nm: float) -> np.ndarray:
    """(n_frames, H, W) float32 KDE target; x_nm, y_nm, frame: (R,) one row per active emitter and frame."""
    ones = np.ones(len(frame), dtype=np.float32)  # (R,) unit mass per active emitter
    return render_spots(x_nm, y_nm, ones, frame, n_frames, shape, hr_pixel_nm, kde_sigma_nm, dtype=np.float32)
