"""Image formation, KDE targets, the camera's maps and spurious charge, and the per-sample stage end to end."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats

from factory.errors import FactoryError
from factory.seeding import degradation_rng
from factory.smlm import CameraMaps, SmlmConfig, SmlmParams, expected_frames, simulate_sample
from factory.smlm.frames import camera_frames
from factory.smlm.kde import kde_frames

PIXEL_NM = 100.0


def reference_spot(x_nm, y_nm, n, shape, pixel_nm, sigma_nm):
    """Independent pixel-integrated Gaussian from scipy.stats.norm.cdf: pixel (r, c) = [c a, (c+1) a) x [r a, (r+1) a)."""
    edges_x = np.arange(shape[1] + 1) * pixel_nm
    edges_y = np.arange(shape[0] + 1) * pixel_nm
    px = np.diff(scipy.stats.norm.cdf(edges_x, loc=x_nm, scale=sigma_nm))
    py = np.diff(scipy.stats.norm.cdf(edges_y, loc=y_nm, scale=sigma_nm))
    return n * np.outer(py, px)


def test_expected_frame_matches_an_independent_erf_model_and_the_axis_convention():
    x, y = np.array([450.0, 1234.5]), np.array([250.0, 611.0])  # first: centre of pixel (row 2, col 4)
    photons, frame = np.array([1000.0, 300.0]), np.array([0, 1])
    e = expected_frames(x, y, photons, frame, 2, (12, 16), PIXEL_NM, 110.0, background=0.0)  # (2, 12, 16)
    assert np.unravel_index(e[0].argmax(), e[0].shape) == (2, 4)  # row = y, column = x
    assert e[0, 2, 3] == pytest.approx(e[0, 2, 5], rel=1e-12) and e[0, 1, 4] == pytest.approx(e[0, 3, 4], rel=1e-12)
    for f in range(2):
        ref = reference_spot(x[f], y[f], photons[f], (12, 16), PIXEL_NM, 110.0)
        np.testing.assert_allclose(e[f], ref, rtol=1e-9, atol=1e-9)


def test_expected_frame_integrates_to_the_emitters_photons_plus_background():
    rng = np.random.default_rng(0)
    shape, f_count = (32, 40), 5
    x = rng.uniform(800, 40 * PIXEL_NM - 800, 60)  # (60,) >= 6 sigma from every edge
    y = rng.uniform(800, 32 * PIXEL_NM - 800, 60)
    photons, frame = rng.uniform(100, 5000, 60), rng.integers(0, f_count, 60)
    background = rng.uniform(5, 50, shape)  # (h, w)
    e = expected_frames(x, y, photons, frame, f_count, shape, PIXEL_NM, 130.0, background)
    for f in range(f_count):
        assert e[f].sum() == pytest.approx(photons[frame == f].sum() + background.sum(), rel=1e-10)
    # at an edge the camera sees exactly the in-field part of the Gaussian
    edge = expected_frames(np.array([30.0]), np.array([1600.0]), np.array([1000.0]), np.array([0]), 1, shape,
                           PIXEL_NM, 130.0)
    inside = 1 - scipy.stats.norm.cdf(0.0, loc=30.0, scale=130.0)
    assert edge.sum() == pytest.approx(1000.0 * inside, rel=1e-9)


def test_kde_integrates_to_the_number_of_active_emitters_per_frame():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(200, 1080, 40), rng.uniform(200, 1080, 40)  # HR field 32 x 40 nm = 1280 nm
    frame = rng.integers(0, 6, 40)
    kde = kde_frames(x, y, frame, 6, (32, 32), 40.0, 25.0)  # (6, 32, 32)
    assert kde.dtype == np.float32
    np.testing.assert_allclose(kde.sum(axis=(1, 2)), np.bincount(frame, minlength=6), rtol=1e-5)
    one = kde_frames(np.array([620.0]), np.array([500.0]), np.array([0]), 1, (32, 32), 40.0, 25.0)[0]
    np.testing.assert_allclose(one, reference_spot(620.0, 500.0, 1.0, (32, 32), 40.0, 25.0), atol=1e-6)


def test_scmos_maps_give_each_pixel_its_analytic_mean_and_variance():
    """Var(ADU) = (qe E + c) / g^2 + s^2 / g^2 + 1/12 (rounding), mean = (qe E + c) / g + o, pixel by pixel."""
    cfg = SmlmConfig(camera_maps="scmos", read_noise_map_log_sigma=0.6, gain_map_rel_std=0.2, offset_map_std_adu=5.0)
    maps = CameraMaps.draw(cfg, run_seed=3, shape=(6, 6))
    params = SmlmParams(qe=0.9, read_noise_e=3.0, gain_e_per_adu=0.5, offset_adu=200.0, spurious_charge=0.5,
                        camera_maps="scmos")
    expected = np.full((6000, 6, 6), 8.0)  # (F, h, w) photons
    adu = camera_frames(expected, params, np.random.default_rng(0), maps).astype(np.float64)
    read, gain, offset = maps.physical(params)
    electrons = 0.9 * 8.0 + 0.5
    var = electrons / gain**2 + read**2 / gain**2 + 1 / 12  # (h, w) ADU^2
    mean = electrons / gain + offset
    assert np.ptp(var) > var.mean()  # the maps really differ between pixels
    np.testing.assert_allclose(adu.mean(axis=0), mean, atol=4 * np.sqrt(var.max() / 6000))
    np.testing.assert_allclose(adu.var(axis=0), var, rtol=5 * np.sqrt(2 / 6000))


def test_spurious_charge_before_the_em_register_adds_its_analytic_mean_and_variance():
    """Dark frames: n ~ Poisson(c), EM output Gamma(n, G): mean G c, variance 2 G^2 c (excess noise factor 2)."""
    c, em_gain, gain = 0.05, 100.0, 10.0
    params = SmlmParams(qe=1.0, read_noise_e=0.0, em_gain=em_gain, gain_e_per_adu=gain, offset_adu=100.0,
                        spurious_charge=c)
    adu = camera_frames(np.zeros((400, 32, 32)), params, np.random.default_rng(1)).astype(np.float64) - 100.0
    n = adu.size
    assert abs(adu.mean() - em_gain * c / gain) < 4 * adu.std() / np.sqrt(n)
    assert adu.var() == pytest.approx(2 * em_gain**2 * c / gain**2 + 1 / 12, rel=0.06)
    clean = camera_frames(np.zeros((10, 32, 32)), dataclasses.replace(params, spurious_charge=0.0),
                          np.random.default_rng(1))
    assert (clean == 100).all()


def test_camera_maps_come_from_the_run_seed_alone():
    cfg = SmlmConfig(camera_maps="scmos")
    a, b = CameraMaps.draw(cfg, 7, (16, 16)), CameraMaps.draw(cfg, 7, (16, 16))
    c = CameraMaps.draw(cfg, 8, (16, 16))
    assert all(np.array_equal(a.to_arrays()[k], b.to_arrays()[k]) for k in a.to_arrays())
    assert not np.array_equal(a.read_noise_factor, c.read_noise_factor)
    stored = {k: np.array(v) for k, v in a.to_arrays().items()}  # as a store would hand them back: copies
    back = CameraMaps.from_arrays(stored).to_arrays()
    assert all(back[k].dtype == np.float32 and back[k].tobytes() == stored[k].tobytes() for k in stored)
    assert CameraMaps.draw(SmlmConfig(), 7, (16, 16)) is None
    big = CameraMaps.draw(cfg, 1, (256, 256))
    assert np.log(big.read_noise_factor).std() == pytest.approx(0.3, rel=0.03)
    assert big.gain_factor.mean() == pytest.approx(1.0, abs=0.002)


def hr_blob(size: int = 64) -> np.ndarray:
    """A filament-like density that stays away from the borders, float32 in [0, 1]."""
    yy, xx = np.mgrid[:size, :size]
    return (np.exp(-((yy - size / 2) ** 2) / 20.0) * ((xx > 8) & (xx < size - 8))).astype(np.float32)


def sample(run_seed: int, i: int, cfg: SmlmConfig, maps=None):
    rng = degradation_rng(run_seed, i)
    return simulate_sample(hr_blob(), 40.0, cfg.draw(rng), rng, sample_id=i, camera_maps=maps)


def test_same_seed_and_sample_give_the_same_bytes_and_other_seeds_differ():
    cfg = dataclasses.replace(SmlmConfig.defaults(), n_frames=20, camera_maps="scmos")
    maps = CameraMaps.draw(cfg, 0, (16, 16))
    a, b, c = sample(0, 5, cfg, maps), sample(0, 5, cfg, maps), sample(1, 5, cfg, maps)
    assert a.frames.tobytes() == b.frames.tobytes() and a.kde.tobytes() == b.kde.tobytes()
    assert a.emitters.equals(b.emitters) and a.stats == b.stats
    assert a.frames.tobytes() != c.frames.tobytes() and not a.emitters.equals(c.emitters)
    assert a.frames.shape == (20, 16, 16) and a.frames.dtype == np.uint16 and a.kde.shape == (20, 64, 64)


def test_sample_targets_and_stats_agree_with_the_emitter_table():
    cfg = SmlmConfig(n_frames=30, labels_per_um2=400.0, k_on_per_s=2.0, k_off_per_s=20.0, kde_sigma_nm=20.0)
    s = sample(2, 0, cfg)
    t = s.emitters
    frame = t.column("frame").to_numpy()
    assert t.num_rows > 30 and s.stats["n_emitter_frames"] == t.num_rows
    np.testing.assert_allclose(s.kde.sum(axis=(1, 2)), np.bincount(frame, minlength=30), rtol=1e-4)
    assert s.stats["emitters_per_frame"] == pytest.approx(t.num_rows / 30)
    assert s.stats["active_per_um2"] == pytest.approx(t.num_rows / 30 / (64 * 64 * 0.04**2))
    photons = t.column("photons").to_numpy()
    on = t.column("on_fraction").to_numpy()
    assert (photons > 0).all() and (on > 0).all() and (on <= 1).all()
    assert (t.column("crlb_x_nm").to_numpy() > 0).all()
    x = t.column("x_nm").to_numpy()
    assert x.min() > 8 * 40.0 and x.max() < 56 * 40.0  # labels only where the density is


@pytest.mark.parametrize("hr,pixel,text", [(np.zeros((30, 32)), 40.0, "downsample 4 does not divide"),
                                           (np.zeros((32, 32)), 0.0, "hr_pixel_nm must be > 0"),
                                           (np.full((32, 32), np.inf), 40.0, "NaN or infinite")])
def test_bad_inputs_are_one_sentence(hr, pixel, text):
    with pytest.raises(FactoryError, match=text):
        simulate_sample(hr, pixel, SmlmParams(), np.random.default_rng(0))


def test_maps_of_another_shape_are_refused():
    maps = CameraMaps.draw(SmlmConfig(camera_maps="scmos"), 0, (8, 8))
    with pytest.raises(FactoryError, match="camera maps are 8x8 pixels but the frames are 16x16"):
        simulate_sample(hr_blob(), 40.0, SmlmParams(n_frames=2, camera_maps="scmos"), np.random.default_rng(0),
                        camera_maps=maps)
    with pytest.raises(FactoryError, match="ask for camera_maps 'scmos' but no maps were given"):
        simulate_sample(hr_blob(), 40.0, SmlmParams(n_frames=2, camera_maps="scmos"), np.random.default_rng(0))
