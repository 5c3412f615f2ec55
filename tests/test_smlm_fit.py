"""The MLE baseline: exact on noise-free ROIs, unbiased, and at the Cramér-Rao bound on simulated camera ROIs."""
from __future__ import annotations

import numpy as np
import pytest

from factory.errors import FactoryError
from factory.smlm import CameraModel, SmlmParams, crlb, expected_frames, fit_mle
from factory.smlm.crlb import default_roi_px
from factory.smlm.frames import camera_frames

SIGMA_NM, PIXEL_NM = 130.0, 100.0
K = default_roi_px(SIGMA_NM, PIXEL_NM)  # 13


def isolated_rois(n: int, photons: float, background: float, params: SmlmParams, seed: int):
    """n ROIs (one frame each) of the real image-formation and camera chain, emitter uniform in the central pixel."""
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-0.5, 0.5, (2, n))
    x, y = (K // 2 + 0.5 + dx) * PIXEL_NM, (K // 2 + 0.5 + dy) * PIXEL_NM
    expected = expected_frames(x, y, np.full(n, photons), np.arange(n), n, (K, K), PIXEL_NM, SIGMA_NM, background)
    return camera_frames(expected, params, rng), x, y, dx, dy  # (n, K, K) uint16 ADU


def test_noise_free_rois_are_fitted_exactly():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(500, 800, 50), rng.uniform(500, 800, 50)
    photons, background = rng.uniform(200, 5000, 50), rng.uniform(1, 50, 50)
    rois = np.stack([expected_frames(x[i:i + 1], y[i:i + 1], photons[i:i + 1], np.array([0]), 1, (K, K), PIXEL_NM,
                                     SIGMA_NM, background[i])[0] for i in range(50)])  # (50, K, K) photons
    fit = fit_mle(rois, SIGMA_NM, PIXEL_NM)
    assert fit.converged.all()
    np.testing.assert_allclose(fit.x_nm, x, atol=1e-3)
    np.testing.assert_allclose(fit.y_nm, y, atol=1e-3)
    np.testing.assert_allclose(fit.photons, photons, rtol=1e-5)
    np.testing.assert_allclose(fit.background, background, rtol=1e-5, atol=1e-5)


CAMERAS = {
    "ideal": SmlmParams(qe=1.0, read_noise_e=0.0, gain_e_per_adu=1.0, offset_adu=0.0),
    "scmos": SmlmParams(qe=0.8, read_noise_e=1.6, gain_e_per_adu=0.5, offset_adu=100.0),
    "emccd": SmlmParams(qe=0.95, read_noise_e=50.0, em_gain=100.0, gain_e_per_adu=20.0, offset_adu=100.0),
}


@pytest.mark.parametrize("camera", sorted(CAMERAS))
def test_mle_reaches_the_cramer_rao_bound(camera):
    """RMSE / CRLB over 1000 emitters (x and y pooled: 2000 errors). The RMSE of 2000 normal errors has a
    relative sd of 1/sqrt(2 x 2000) = 1.6 %: the window 0.93-1.15 is 4.5 sd below 1 and leaves the
    issue's 1.15 above (an MLE's small excess at these counts is a few %)."""
    params = CAMERAS[camera]
    n, photons, background = 1000, 1000.0, 10.0
    rois, x, y, dx, dy = isolated_rois(n, photons, background, params, seed=sorted(CAMERAS).index(camera))
    model = CameraModel.from_params(params)
    fit = fit_mle(rois, SIGMA_NM, PIXEL_NM, model)
    assert fit.converged.all()
    errors = np.concatenate([fit.x_nm - x, fit.y_nm - y])  # (2n,)
    bound = crlb(photons, background, SIGMA_NM, PIXEL_NM, model, dx_px=dx, dy_px=dy, roi_px=K)
    rms_bound = np.sqrt(np.mean(np.concatenate([bound.x_nm, bound.y_nm]) ** 2))
    ratio = np.sqrt(np.mean(errors**2)) / rms_bound
    assert 0.93 < ratio < 1.15, ratio
    assert abs(errors.mean()) < 4 * errors.std() / np.sqrt(errors.size)  # unbiased
    assert abs(fit.photons.mean() - photons) < 4 * fit.photons.std() / np.sqrt(n)
    assert 0.9 < fit.photons.std() / np.sqrt(np.mean(bound.photons**2)) < 1.2


def test_bad_roi_stack_is_one_sentence():
    with pytest.raises(FactoryError, match="ROIs must be an"):
        fit_mle(np.zeros((4, 5, 6)), SIGMA_NM, PIXEL_NM)
