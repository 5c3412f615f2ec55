"""Labels from an HR density: Poisson counts (mean and variance), density following, continuous positions."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats

from factory.errors import FactoryError
from factory.smlm.emitters import draw_labels, label_intensity

HR_PIXEL_NM = 40.0


def test_uniform_density_gives_poisson_counts_with_the_right_mean_and_variance():
    """16x16 HR pixels of 40 nm = 0.4096 um^2 at 50 labels/um^2: Poisson with mean 20.48."""
    hr = np.full((16, 16), 0.3, np.float32)
    rng = np.random.default_rng(0)
    counts = np.array([len(draw_labels(hr, HR_PIXEL_NM, 50.0, rng)) for _ in range(2000)])  # (2000,)
    mean = 50.0 * 16 * 16 * HR_PIXEL_NM**2 / 1e6
    assert abs(counts.mean() - mean) < 4 * np.sqrt(mean / counts.size)
    # variance = mean for a Poisson law: index-of-dispersion test, sum (n - mean)^2 / mean ~ chi2(n - 1)
    dispersion = ((counts - counts.mean()) ** 2).sum() / counts.mean()
    p = scipy.stats.chi2.sf(dispersion, counts.size - 1)
    assert 1e-3 < p < 1 - 1e-3, (counts.var(), mean)
    # and per area: one quadrant holds a quarter of the mean, with Poisson variance too
    quad = np.array([int(((lab.x_nm < 320) & (lab.y_nm < 320)).sum())
                     for lab in (draw_labels(hr, HR_PIXEL_NM, 50.0, rng) for _ in range(2000))])
    assert abs(quad.mean() - mean / 4) < 4 * np.sqrt(mean / 4 / quad.size)
    assert quad.var() == pytest.approx(mean / 4, rel=0.15)  # sd of a variance estimate at n=2000: ~3.5 %


def test_zero_and_negative_density_give_no_labels():
    rng = np.random.default_rng(1)
    assert len(draw_labels(np.zeros((32, 32)), HR_PIXEL_NM, 500.0, rng)) == 0
    assert len(draw_labels(-np.ones((32, 32)), HR_PIXEL_NM, 500.0, rng)) == 0
    hr = np.zeros((32, 32))
    hr[:, 16:] = 1.0  # right half only
    labels = draw_labels(hr, HR_PIXEL_NM, 500.0, rng)
    assert len(labels) > 100 and labels.x_nm.min() >= 16 * HR_PIXEL_NM


def test_counts_follow_the_density_and_the_mean_density_sets_the_scale():
    """Left half density 1, right half 3: 1/4 and 3/4 of the labels; labels_per_um2 at the mean density."""
    hr = np.ones((32, 32))
    hr[:, 16:] = 3.0
    expected = label_intensity(hr, HR_PIXEL_NM, 200.0)  # (H, W) labels per pixel
    area_um2 = 32 * 32 * HR_PIXEL_NM**2 / 1e6
    assert expected.sum() == pytest.approx(200.0 * area_um2)
    assert expected[0, 20] / expected[0, 0] == pytest.approx(3.0)
    rng = np.random.default_rng(2)
    x = np.concatenate([draw_labels(hr, HR_PIXEL_NM, 200.0, rng).x_nm for _ in range(200)])
    right = (x >= 16 * HR_PIXEL_NM).mean()
    assert abs(right - 0.75) < 4 * np.sqrt(0.75 * 0.25 / x.size)


def test_positions_are_continuous_and_uniform_inside_their_pixels():
    hr = np.zeros((8, 8))
    hr[2, 5] = 1.0  # one pixel: x in [200, 240) nm, y in [80, 120) nm
    labels = draw_labels(hr, HR_PIXEL_NM, 5000.0, np.random.default_rng(3))
    assert len(labels) > 300  # Poisson mean 5000 x 0.1024 um^2 = 512
    assert (labels.x_nm >= 5 * HR_PIXEL_NM).all() and (labels.x_nm < 6 * HR_PIXEL_NM).all()
    assert (labels.y_nm >= 2 * HR_PIXEL_NM).all() and (labels.y_nm < 3 * HR_PIXEL_NM).all()
    for frac in (labels.x_nm / HR_PIXEL_NM - 5, labels.y_nm / HR_PIXEL_NM - 2):
        assert scipy.stats.kstest(frac, "uniform").pvalue > 1e-3
    assert len(np.unique(labels.x_nm)) == len(labels)  # not pixel centres


@pytest.mark.parametrize("bad,text", [(np.full((4, 4), np.nan), "NaN"), (np.zeros((2, 4, 4)), "one (H, W) image")])
def test_bad_density_is_one_sentence(bad, text):
    with pytest.raises(FactoryError, match=re.escape(text)):
        draw_labels(bad, HR_PIXEL_NM, 10.0, np.random.default_rng(0))
