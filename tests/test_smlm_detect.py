"""The MLE baseline on whole frames (factory.smlm.detect): reaches the bound on isolated emitters, merges overlapping ones."""
import numpy as np
import pytest

from factory.errors import FactoryError
from factory.smlm import CameraModel, crlb, detect_fit, expected_frames

PIXEL, SIGMA, SIDE = 160.0, 110.0, 16


def _frames(xy_per_frame, photons, background, seed):
    rows = [(f, x, y) for f, xy in enumerate(xy_per_frame) for x, y in xy]
    frame, x, y = (np.array(c, float) for c in zip(*rows))
    mu = expected_frames(x, y, np.full(len(x), photons), frame.astype(np.int64), len(xy_per_frame), (SIDE, SIDE), PIXEL,
                         SIGMA, background)
    return np.random.default_rng(seed).poisson(mu).astype(np.float64)  # default camera: ADU = photons


def test_isolated_emitters_are_found_and_fitted_at_the_cramer_rao_bound():
    rng = np.random.default_rng(0)
    truth = [[tuple(rng.uniform(3 * PIXEL, (SIDE - 3) * PIXEL, 2))] for _ in range(400)]
    N, b = 2000.0, 20.0
    found = detect_fit(_frames(truth, N, b, 1), SIGMA, PIXEL)
    assert sum(len(f.photons) == 1 for f in found) >= 396  # at most 1 % missed or split
    err = np.array([f.xy_nm[0] - t[0] for f, t in zip(found, truth) if len(f.photons) == 1])  # (n, 2)
    bound = crlb(N, b, SIGMA, PIXEL, CameraModel()).x_nm[0]
    ratio = np.sqrt(np.mean(err**2)) / bound
    assert 0.9 <= ratio <= 1.2, ratio
    photons = np.array([f.photons[0] for f in found if len(f.photons) == 1])
    assert abs(np.median(photons) / N - 1) < 0.05


def test_an_empty_frame_gives_no_localizations_and_overlapping_emitters_merge():
    rng = np.random.default_rng(2)
    empty = rng.poisson(np.full((50, SIDE, SIDE), 20.0)).astype(np.float64)
    assert sum(len(f.photons) for f in detect_fit(empty, SIGMA, PIXEL)) <= 1  # 5-sigma threshold: rare false alarms
    centre = SIDE * PIXEL / 2
    pair = [[(centre - 40, centre), (centre + 40, centre)]] * 20  # 80 nm apart: half a pixel, well inside one PSF
    found = detect_fit(_frames(pair, 3000.0, 10.0, 3), SIGMA, PIXEL)
    assert all(len(f.photons) == 1 for f in found)  # one fit per merged spot: the baseline's known failure
    assert np.median([abs(f.xy_nm[0, 0] - centre) for f in found]) < 20  # placed between the two
    assert np.median([f.photons[0] for f in found]) > 1.7 * 3000


def test_bad_input_is_one_sentence():
    with pytest.raises(FactoryError, match="stack of frames"):
        detect_fit(np.zeros((16, 16)), SIGMA, PIXEL)
    with pytest.raises(FactoryError, match="does not fit"):
        detect_fit(np.zeros((1, 4, 4)), SIGMA, PIXEL)
