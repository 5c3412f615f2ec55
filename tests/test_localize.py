"""Localization from KDE images, optimal matching and the SMLM-challenge metrics, photon fits.

References: positions from :func:`factory.render.splat_gaussians` (an independent renderer of
pixel-integrated Gaussians); metrics hand-computed from Sage et al. 2019's definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from factory.localize import Scores, find_peaks, fit_photons, isolated_peak, match, score
from factory.render import splat_gaussians


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sigma_px", [0.8, 1.0, 2.0])
def test_isolated_noise_free_peaks_are_found_to_a_hundredth_of_a_pixel(seed, sigma_px):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2)  # 16 cells, one emitter each
    xy = (grid * 16 + 4 + rng.uniform(0, 8, grid.shape))  # (16, 2) px, >= 8 px apart
    image = splat_gaussians(xy[:, 0], xy[:, 1], np.full(len(xy), sigma_px), (64, 64))
    assert image.max() == pytest.approx(isolated_peak(sigma_px), rel=0.3)  # the peak scale the threshold uses
    found, heights = find_peaks(image, 0.5 * isolated_peak(sigma_px))
    assert len(found) == len(xy)
    m = match(found, xy, tolerance_nm=1.0)  # px here: units cancel
    assert m.tp == len(xy)
    assert np.abs(found[m.pred_index] - xy[m.true_index]).max() < 0.01
    assert (heights > 0).all()


def test_threshold_and_background_peaks():
    xy = np.array([[10.3, 10.7], [30.5, 20.2]])
    image = splat_gaussians(xy[:, 0], xy[:, 1], np.ones(2), (40, 40), weights=np.array([1.0, 0.3]))
    peak = isolated_peak(1.0)
    assert len(find_peaks(image, 0.5 * peak)[0]) == 1  # the dim one (0.3 of a peak) is below threshold
    assert len(find_peaks(image, 0.2 * peak)[0]) == 2
    assert len(find_peaks(np.zeros((8, 8)), 0.0)[0]) == 0  # flat image: nothing above threshold


def test_matching_on_a_constructed_case_gives_the_hand_computed_metrics():
    true = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    pred = np.array([[3.0, 4.0], [100.0, 12.0], [500.0, 500.0]])  # 5 nm off, 12 nm off, far away
    m = match(pred, true, tolerance_nm=50.0)
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    assert sorted(m.distance_nm.tolist()) == pytest.approx([5.0, 12.0])
    s = score([m])
    assert s.jaccard == pytest.approx(2 / 4)
    assert s.rmse_lateral_nm == pytest.approx(math.sqrt((25 + 144) / 2))  # 9.192 nm
    # Sage et al. 2019, on the percent scale with alpha = 1 / nm (lateral): E = 100 - sqrt((100 - JAC)^2 + RMSE^2)
    assert 100 * s.efficiency == pytest.approx(100 - math.sqrt((100 - 50.0) ** 2 + (1.0 * math.sqrt(84.5)) ** 2))


def test_assignment_is_optimal_not_greedy():
    """Greedy nearest-first pairs P with B (20 nm) and leaves Q and A unpaired (80 nm apart);
    the optimal assignment pairs P-A and Q-B (30 nm each): two true positives."""
    true = np.array([[0.0, 0.0], [50.0, 0.0]])  # A, B
    pred = np.array([[30.0, 0.0], [80.0, 0.0]])  # P, Q
    m = match(pred, true, tolerance_nm=40.0)
    assert m.tp == 2 and m.distance_nm.tolist() == pytest.approx([30.0, 30.0])


def test_scores_sum_over_frames_and_empty_cases():
    a = match(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]), 10.0)  # TP at 5 nm
    b = match(np.zeros((0, 2)), np.array([[0.0, 0.0]]), 10.0)  # FN
    c = match(np.array([[0.0, 0.0]]), np.zeros((0, 2)), 10.0)  # FP
    s = score([a, b, c])
    assert (s.tp, s.fp, s.fn) == (1, 1, 1) and s.jaccard == pytest.approx(1 / 3) and s.rmse_lateral_nm == pytest.approx(5.0)
    assert math.isnan(Scores(0, 0, 0, 0.0).jaccard)  # nothing to score is not a perfect score
    perfect = score([match(np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]]), 1.0)])
    assert perfect.efficiency == pytest.approx(1.0)


def test_photon_fit_separates_overlapping_emitters():
    xy_nm = np.array([[400.0, 500.0], [480.0, 530.0], [1200.0, 900.0]])  # the first two 85 nm apart, PSF sigma 110 nm
    photons = np.array([1000.0, 2500.0, 300.0])
    frame = 12.0 + splat_gaussians(xy_nm[:, 0] / 100, xy_nm[:, 1] / 100, np.full(3, 1.1), (16, 20), weights=photons)
    fitted, background = fit_photons(frame, xy_nm, pixel_nm=100.0, psf_sigma_nm=110.0)
    assert fitted == pytest.approx(photons, rel=1e-4) and background == pytest.approx(12.0, rel=1e-4)
    noisy = np.random.default_rng(0).poisson(frame, (50, *frame.shape))
    fits = np.array([fit_photons(f, xy_nm, 100.0, 110.0)[0] for f in noisy])  # (50, 3)
    assert np.abs(fits.mean(axis=0) / photons - 1).max() < 0.1  # unbiased within the spread of 50 noisy frames
