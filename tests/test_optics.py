"""The optical degradation chain: PSF, binning, background, camera noise, config and determinism."""
from __future__ import annotations

import json
import math

import jsonschema

from factory.store import schemas
import numpy as np
import pytest
import scipy.ndimage

from factory.errors import FactoryError
from factory.optics import DegradationConfig, DegradationParams, PsfModel, Range, degrade, expected_photons
from factory.optics.config import RANGE_FIELDS
from factory.optics.params import BOUNDS
from factory.optics.psf import blur_bin_matrix, psf_kernel_1d, sigma_from_na_nm

SEEDS = [0, 1, 2]
HR_PIXEL_NM = 40.0


@pytest.fixture
def params() -> DegradationParams:
    """The canonical tiny setup: 40 nm HR pixels binned 4x to 160 nm, no background."""
    return DegradationParams(photons=500.0, background_photons=0.0, background_variation=0.0, psf_sigma_nm=95.0,
                             downsample=4, qe=0.8, read_noise_e=2.0, gain_e_per_adu=0.5, offset_adu=100.0)


def filaments(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Sparse bright HR structure reaching the borders, float64 in [0, 1]."""
    return np.random.default_rng(seed).random(shape) ** 6


# --- PSF ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma_px", [0.5, 1.0, 2.4, 10.0])
@pytest.mark.parametrize("model", list(PsfModel))
def test_kernel_sums_to_one(sigma_px, model):
    kernel = psf_kernel_1d(sigma_px, model)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(kernel, kernel[::-1])


def test_erf_kernel_approaches_sampled_gaussian_for_small_pixels():
    def gap(sigma_px):
        erf, gauss = psf_kernel_1d(sigma_px, PsfModel.ERF), psf_kernel_1d(sigma_px, PsfModel.GAUSSIAN)
        return np.abs(erf - gauss).max() / gauss.max()

    assert gap(10.0) < 1e-3  # pixel 10x smaller than sigma
    assert gap(0.5) > 2e-2  # pixel as large as 2 sigma: the forms differ
    t = np.arange(-40, 41)
    added = ((psf_kernel_1d(10.0, PsfModel.ERF) - psf_kernel_1d(10.0, PsfModel.GAUSSIAN)) * t**2).sum()
    assert added == pytest.approx(1.0 / 12.0, rel=0.02)  # pixel integration adds a^2/12 to the variance


def test_sigma_from_na():
    assert sigma_from_na_nm(670.0, 1.49) == pytest.approx(94.43, abs=0.01)


@pytest.mark.parametrize("n_hr,k,sigma_px", [(64, 4, 2.4), (48, 3, 0.7), (32, 4, 30.0), (20, 1, 1.5)])
@pytest.mark.parametrize("model", list(PsfModel))
def test_blur_bin_matrix_conserves_flux(n_hr, k, sigma_px, model):
    matrix = blur_bin_matrix(n_hr, k, sigma_px, model)
    assert matrix.shape == (n_hr // k, n_hr)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0, atol=1e-12)  # every HR pixel's light lands somewhere


def test_gaussian_model_equals_scipy_gaussian_filter_then_binning(params):
    hr = filaments((2, 64, 48)).astype(np.float32)  # non-square: both axes
    sigma_px = params.psf_sigma_nm / HR_PIXEL_NM
    blurred = scipy.ndimage.gaussian_filter(hr.astype(np.float64), (0, sigma_px, sigma_px), mode="reflect", truncate=4.0)
    binned = blurred.reshape(2, 16, 4, 12, 4).sum(axis=(2, 4))
    reference = binned * (params.photons / binned.max(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(expected_photons(hr, HR_PIXEL_NM, params), reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model", list(PsfModel))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_photon_flux_conserved_by_psf_and_binning(params, model, dtype):
    """Borders reflect, so no light is lost even from structure touching the edges."""
    p = DegradationParams(**{**params.to_record(), "psf_model": model})
    hr = filaments((3, 64, 64), seed=1)
    sigma_px = p.psf_sigma_nm / HR_PIXEL_NM
    m = blur_bin_matrix(64, 4, sigma_px, model)
    lr_unscaled = m @ hr @ m.T  # (3, 16, 16) float64
    np.testing.assert_allclose(lr_unscaled.sum(axis=(1, 2)), hr.sum(axis=(1, 2)), rtol=1e-12)
    scale = p.photons / lr_unscaled.max(axis=(1, 2))  # photons per unit HR density
    lr = expected_photons(hr.astype(dtype), HR_PIXEL_NM, p)
    assert lr.dtype == dtype
    np.testing.assert_allclose(lr.sum(axis=(1, 2), dtype=np.float64), scale * hr.sum(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(lr.max(axis=(1, 2)), p.photons, rtol=1e-6)  # the definition of `photons`


@pytest.mark.parametrize("model", list(PsfModel))
def test_point_source_width_matches_psf_plus_pixelation(params, model):
    """Spots at all 4x4 sub-pixel phases; moment width = sqrt(sigma^2 + a_lr^2/12 [+ a_hr^2/12 for erf])."""
    p = DegradationParams(**{**params.to_record(), "psf_model": model})
    k, lr_pixel_nm = p.downsample, HR_PIXEL_NM * p.downsample
    hr = np.zeros((256, 256))
    for py in range(k):
        for px in range(k):
            hr[32 + 64 * py + py, 32 + 64 * px + px] = 1.0  # one spot per phase, 16 LR px apart
    lr = expected_photons(hr, HR_PIXEL_NM, p)  # (64, 64)
    variances = []
    for cy in range(8, 64, 16):
        for cx in range(8, 64, 16):
            spot = lr[cy - 8:cy + 8, cx - 8:cx + 8]
            profile = spot.sum(axis=0)  # x marginal
            x = np.arange(16)
            mean = (profile * x).sum() / profile.sum()
            variances.append((profile * (x - mean) ** 2).sum() / profile.sum())
    sigma_fit_px = math.sqrt(np.mean(variances))
    pixel_terms = lr_pixel_nm**2 / 12 + (HR_PIXEL_NM**2 / 12 if model is PsfModel.ERF else 0.0)
    expected_px = math.sqrt(p.psf_sigma_nm**2 + pixel_terms) / lr_pixel_nm
    assert sigma_fit_px == pytest.approx(expected_px, rel=0.02)
    assert abs(sigma_fit_px / (p.psf_sigma_nm / lr_pixel_nm) - 1) > 0.05  # the pixelation term matters here


# --- camera ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_flat_image_mean_and_variance_are_poisson_plus_read_noise(params, seed):
    params = DegradationParams(**{**params.to_record(), "read_noise_e": 8.0})
    hr = np.ones((64, 64, 64), np.float32)  # -> (64, 16, 16): 16384 LR pixels
    expected = expected_photons(hr, HR_PIXEL_NM, params)
    np.testing.assert_allclose(expected, params.photons, rtol=1e-6)  # flat stays flat, borders included
    adu = degrade(hr, HR_PIXEL_NM, params, np.random.default_rng(seed))
    electrons = (adu.astype(np.float64) - params.offset_adu) * params.gain_e_per_adu
    mean_e = params.qe * params.photons
    var_e = mean_e + params.read_noise_e**2 + params.gain_e_per_adu**2 / 12  # shot + read + quantization
    n = electrons.size
    assert abs(electrons.mean() - mean_e) < 5 * math.sqrt(var_e / n)
    assert abs(electrons.var(ddof=1) - var_e) < 5 * var_e * math.sqrt(2 / n)


@pytest.mark.parametrize("seed", SEEDS)
def test_em_gain_doubles_the_shot_noise_variance(params, seed):
    p = DegradationParams(**{**params.to_record(), "photons": 100.0, "qe": 0.9, "em_gain": 50.0,
                             "gain_e_per_adu": 10.0, "read_noise_e": 20.0})
    adu = degrade(np.ones((64, 64, 64)), HR_PIXEL_NM, p, np.random.default_rng(seed))
    electrons = (adu.astype(np.float64) - p.offset_adu) * p.gain_e_per_adu
    photoelectrons = p.qe * p.photons
    assert electrons.mean() == pytest.approx(p.em_gain * photoelectrons, rel=0.01)
    excess = (electrons.var() - p.read_noise_e**2 - p.gain_e_per_adu**2 / 12) / (p.em_gain**2 * photoelectrons)
    assert excess == pytest.approx(2.0, rel=0.05)  # F^2 = 2 for a high-gain EM register


@pytest.mark.parametrize("seed", SEEDS)
def test_dark_frame_is_offset_plus_read_noise(params, seed):
    dark = DegradationParams(**{**params.to_record(), "read_noise_e": 3.0, "offset_adu": 200.0})
    adu = degrade(np.zeros((64, 64, 64)), HR_PIXEL_NM, dark, np.random.default_rng(seed))
    electrons = (adu.astype(np.float64) - dark.offset_adu) * dark.gain_e_per_adu
    assert abs(electrons.mean()) < 0.1  # 5 standard errors
    assert electrons.std() == pytest.approx(math.sqrt(3.0**2 + dark.gain_e_per_adu**2 / 12), rel=0.03)


def test_zero_image_gives_background_only_and_dark_frame_is_offset(params):
    p = DegradationParams(**{**params.to_record(), "background_photons": 5.0})
    np.testing.assert_array_equal(expected_photons(np.zeros((32, 32)), HR_PIXEL_NM, p), 5.0)
    dark = DegradationParams(**{**params.to_record(), "read_noise_e": 0.0})
    adu = degrade(np.zeros((32, 32)), HR_PIXEL_NM, dark, np.random.default_rng(0))
    np.testing.assert_array_equal(adu, 100)


def test_quantization_clips_to_bit_depth(params):
    bright = DegradationParams(**{**params.to_record(), "photons": 1e6, "bit_depth": 8, "offset_adu": 0.0, "read_noise_e": 5.0})
    hr = np.zeros((64, 64))
    hr[30:34, 30:34] = 1.0
    adu = degrade(hr, HR_PIXEL_NM, bright, np.random.default_rng(0))
    assert adu.dtype == np.uint16
    assert adu.max() == 255 and adu.min() == 0  # saturated spot, read noise below zero clipped


# --- background --------------------------------------------------------------------------------

def test_structured_background_mean_smoothness_and_reproducibility(params):
    p = DegradationParams(**{**params.to_record(), "background_photons": 20.0, "background_variation": 0.3,
                             "background_sigma_nm": 1000.0, "background_seed": 7})
    hr = np.zeros((8, 256, 256), np.float32)  # no signal: the expectation is the background alone
    bg = expected_photons(hr, HR_PIXEL_NM, p).astype(np.float64)  # (8, 64, 64), sigma = 6.25 LR px
    np.testing.assert_allclose(bg.mean(axis=(1, 2)), 20.0, rtol=1e-5)  # mean is exactly background_photons
    assert bg.min() > 0
    relative_std = (bg.std(axis=(1, 2)) / bg.mean(axis=(1, 2))).mean()
    assert 0.15 < relative_std < 0.4  # ~ background_variation
    neighbours = np.corrcoef(bg[:, :, 1:].ravel(), bg[:, :, :-1].ravel())[0, 1]
    assert neighbours > 0.9  # smooth on the scale of background_sigma_nm
    assert not np.allclose(bg[0], bg[1])  # each image its own field
    np.testing.assert_array_equal(expected_photons(hr, HR_PIXEL_NM, p), expected_photons(hr, HR_PIXEL_NM, p))
    other = DegradationParams(**{**p.to_record(), "background_seed": 8})
    assert not np.allclose(expected_photons(hr, HR_PIXEL_NM, other), bg)


# --- determinism and shapes ------------------------------------------------------------------

RANGED = DegradationConfig(photons=Range(100, 3000, log=True), psf_sigma_nm=(80, 120), background_photons=(0, 30),
                           em_gain=(1, 20), read_noise_e=(1, 3), psf_model="erf")


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_gives_identical_frames_and_another_seed_differs(seed):
    hr = filaments((2, 32, 32), seed=seed).astype(np.float32)

    def run(s):
        rng = np.random.default_rng(s)
        p = RANGED.draw(rng)
        return p, degrade(hr, HR_PIXEL_NM, p, rng)

    (p1, lr1), (p2, lr2), (p3, lr3) = run(seed), run(seed), run(seed + 100)
    assert p1 == p2 and lr1.dtype == np.uint16
    np.testing.assert_array_equal(lr1, lr2)
    assert p3 != p1 and not np.array_equal(lr3, lr1)


def test_shapes_and_batch_equals_single(params):
    hr = filaments((3, 32, 48)).astype(np.float32)
    batch = expected_photons(hr, HR_PIXEL_NM, params)
    assert batch.shape == (3, 8, 12)
    single = expected_photons(hr[1], HR_PIXEL_NM, params)
    assert single.shape == (8, 12)
    np.testing.assert_allclose(single, batch[1], rtol=1e-5)
    assert degrade(hr, HR_PIXEL_NM, params, np.random.default_rng(0)).shape == (3, 8, 12)
    assert degrade(hr[0], HR_PIXEL_NM, params, np.random.default_rng(0)).shape == (8, 12)


def test_negative_density_emits_nothing(params):
    hr = filaments((2, 32, 32)) - 0.1
    np.testing.assert_array_equal(expected_photons(hr, HR_PIXEL_NM, params),
                                  expected_photons(np.maximum(hr, 0), HR_PIXEL_NM, params))


@pytest.mark.parametrize("hr,pixel_nm,match", [
    (np.ones((30, 32)), HR_PIXEL_NM, "downsample 4 does not divide"),
    (np.ones((2, 2, 32, 32)), HR_PIXEL_NM, r"\(H, W\) or \(N, H, W\)"),
    (np.full((32, 32), np.nan), HR_PIXEL_NM, "NaN"),
    (np.ones((32, 32)), 0.0, "hr_pixel_nm"),
])
def test_bad_inputs_are_one_sentence_errors(params, hr, pixel_nm, match):
    with pytest.raises(FactoryError, match=match):
        expected_photons(hr, pixel_nm, params)


# --- config ------------------------------------------------------------------------------------

def test_default_config_round_trips_and_matches_schema():
    cfg = DegradationConfig()
    assert cfg.downsample == 4 and cfg.psf_sigma_nm == Range(95.0, 95.0)
    d = cfg.to_dict()
    jsonschema.validate(d, schemas.load("degradation.v1.json"))
    assert DegradationConfig.from_dict(json.loads(json.dumps(d))) == cfg


def test_ranged_config_round_trips_through_json_and_toml(tmp_path):
    cfg = DegradationConfig(photons=Range(100, 5000, log=True), na=1.4, wavelength_nm=(600, 700), bit_depth=(12, 16),
                            psf_model=PsfModel.ERF, downsample=2)
    d = cfg.to_dict()
    jsonschema.validate(d, schemas.load("degradation.v1.json"))
    (tmp_path / "c.json").write_text(json.dumps(d))
    assert DegradationConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "c.toml").write_text('schema_version = 1\ndownsample = 2\npsf_model = "erf"\nna = 1.4\n'
                                     'wavelength_nm = [600, 700]\nbit_depth = [12, 16]\n'
                                     'photons = {low = 100, high = 5000, log = true}\n')
    assert DegradationConfig.load(tmp_path / "c.toml") == cfg


def test_draw_respects_fixed_values_and_ranges():
    cfg = DegradationConfig(photons=Range(100, 10000, log=True), na=1.4, wavelength_nm=(600, 700), bit_depth=(12, 16),
                            qe=0.7)
    rng = np.random.default_rng(0)
    draws = [cfg.draw(rng) for _ in range(400)]
    assert {p.qe for p in draws} == {0.7} and {p.downsample for p in draws} == {4}
    assert {p.bit_depth for p in draws} == {12, 13, 14, 15, 16}
    photons = np.array([p.photons for p in draws])
    assert photons.min() >= 100 and photons.max() <= 10000
    assert 0.4 < np.mean(photons < 1000) < 0.6  # log-uniform: the geometric mean is the median
    for p in draws[:5]:
        assert 600 <= p.wavelength_nm <= 700
        assert p.psf_sigma_nm == pytest.approx(0.21 * p.wavelength_nm / p.na)


def test_params_record_is_flat_json_and_round_trips():
    p = DegradationConfig().draw(np.random.default_rng(3))
    record = p.to_record()
    for column in ("photons", "background_photons", "psf_sigma_nm", "psf_model", "downsample", "qe", "read_noise_e",
                   "gain_e_per_adu", "offset_adu", "bit_depth", "em_gain", "background_seed"):
        assert column in record
    assert record["psf_model"] == "gaussian"
    assert json.loads(json.dumps(record)) == record
    assert DegradationParams.from_record({**record, "sample_id": 9}) == p


@pytest.mark.parametrize("field,value", [
    ("photons", -1), ("downsample", 0), ("gain_e_per_adu", 0), ("bit_depth", 17), ("bit_depth", 0), ("qe", 1.5),
    ("em_gain", 0.5), ("photons", [500, 100]), ("read_noise_e", [-1, 2]), ("offset_adu", 70000), ("downsample", [2, 4]),
    ("psf_model", "airy"), ("photons", "many"), ("background_sigma_nm", 0),
])
def test_impossible_values_are_rejected_naming_the_field(tmp_path, field, value):
    with pytest.raises(FactoryError, match=field):
        DegradationConfig(**{field: value})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema_version": 1, field: value}))
    with pytest.raises(FactoryError, match=field):
        DegradationConfig.load(path)


@pytest.mark.parametrize("d,match", [
    ({"schema_version": 1, "na": 1.4}, "na and wavelength_nm"),
    ({"schema_version": 1, "na": 1.4, "wavelength_nm": 670, "psf_sigma_nm": 90}, "either psf_sigma_nm or na"),
    ({"schema_version": 1, "offset_adu": 300, "bit_depth": 8}, "offset_adu"),
    ({"schema_version": 1, "photon": 300}, "unknown field 'photon'"),
    ({"photons": 300}, "schema_version"),
    ({"schema_version": 2}, "schema_version"),
])
def test_inconsistent_configs_are_rejected(d, match):
    with pytest.raises(FactoryError, match=match):
        DegradationConfig.from_dict(d)


def test_params_reject_impossible_values(params):
    for field, value in [("photons", -1.0), ("bit_depth", 0), ("gain_e_per_adu", -2.0), ("na", 1.4)]:
        with pytest.raises(FactoryError, match=field):
            DegradationParams(**{**params.to_record(), field: value})


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_schema_and_code_enforce_the_same_bounds(name):
    """Every bound of params.BOUNDS is in the JSON Schema too: a value just outside fails both."""
    schema, bound = schemas.load("degradation.v1.json"), BOUNDS[name]
    valid = DegradationConfig(na=1.4, wavelength_nm=670, psf_sigma_nm=None).to_dict()
    outside = [bound.low if bound.low_open else bound.low - 1]
    if not math.isinf(bound.high):
        outside.append(bound.high if bound.high_open else bound.high + 1)
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(valid))
    for value in outside:
        bad = {**valid, name: value}
        if name == "psf_sigma_nm":
            bad.update(na=None, wavelength_nm=None)
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad)), (name, value)
        with pytest.raises(FactoryError):
            DegradationConfig.from_dict(bad)
    assert set(RANGE_FIELDS) | {"downsample"} == set(BOUNDS)


def test_dataset_defaults_vary_signal_background_and_psf_and_match_schema():
    cfg = DegradationConfig.dataset_defaults()
    jsonschema.validate(cfg.to_dict(), schemas.load("degradation.v1.json"))
    draws = [cfg.draw(np.random.default_rng(s)) for s in range(50)]
    photons = np.array([p.photons for p in draws])
    assert photons.min() >= 100 and photons.max() <= 3000 and photons.std() > 100
    assert len({p.background_photons for p in draws}) == 50 and len({p.psf_sigma_nm for p in draws}) == 50
    assert {p.read_noise_e for p in draws} == {1.6}


# --- photon scale (peak | density) and LR contrast ---------------------------------------------

def test_density_scale_is_photons_per_unit_density_per_hr_pixel(params):
    """density: the total expected signal is photons x the summed HR density (flux is conserved)."""
    p = DegradationParams(**{**params.to_record(), "photon_scale": "density", "photons": 40.0})
    hr = filaments((3, 64, 48), seed=3)
    e = expected_photons(hr, HR_PIXEL_NM, p)
    np.testing.assert_allclose(e.sum(axis=(1, 2)), 40.0 * hr.sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(expected_photons(2 * hr, HR_PIXEL_NM, p), 2 * e, rtol=1e-6)  # the HR scale matters


def test_density_scale_does_not_depend_on_other_structure_in_the_field(params):
    """A filament's signal under `peak` falls when a brighter spot appears elsewhere; under `density` it does not."""
    hr = np.zeros((64, 64))
    hr[:, 10] = 0.5  # a vertical filament
    brighter = hr.copy()
    brighter[40:42, 50:52] = 1.0  # a bright cluster far from it
    for scale, changes in (("peak", True), ("density", False)):
        p = DegradationParams(**{**params.to_record(), "photon_scale": scale})
        before, after = (expected_photons(x, HR_PIXEL_NM, p)[:, 2] for x in (hr, brighter))  # LR column of the filament
        assert (not np.allclose(before, after, rtol=1e-3)) is changes, scale


def test_photon_scale_config_round_trips_and_the_default_is_not_written(tmp_path):
    assert "photon_scale" not in DegradationConfig().to_dict()  # specs made before the field stay equal
    (tmp_path / "d.toml").write_text('schema_version = 1\nphoton_scale = "density"\nphotons = [20, 80]\n')
    cfg = DegradationConfig.load(tmp_path / "d.toml")
    assert cfg.photon_scale.value == "density" and cfg.to_dict()["photon_scale"] == "density"
    jsonschema.validate(cfg.to_dict(), schemas.load("degradation.v1.json"))
    assert DegradationConfig.from_dict(cfg.to_dict()) == cfg
    params = cfg.draw(np.random.default_rng(0))
    assert params.to_record()["photon_scale"] == "density" and 20 <= params.photons <= 80
    assert DegradationParams.from_record({k: v for k, v in params.to_record().items() if k != "photon_scale"}).photon_scale.value == "peak"
    with pytest.raises(FactoryError, match="photon_scale must be one of"):
        DegradationConfig.from_dict({"schema_version": 1, "photon_scale": "brightest"})


def test_frame_contrast_is_the_percentile_ratio_with_a_floor():
    from factory.optics.contrast import contrast_stats, frame_contrast, tiles

    rng = np.random.default_rng(0)
    frames = rng.uniform(10, 20, (5, 16, 16))
    lo, hi = np.percentile(frames, (1.0, 99.8), axis=(1, 2))
    np.testing.assert_allclose(frame_contrast(frames), hi / lo)
    assert frame_contrast(np.full((8, 8), -3.0))[0] == -3.0  # the dark floor is 1 e-: C = p_hi / 1
    stats = contrast_stats(frames)
    assert stats.frames == 5 and stats.p10 <= stats.median <= stats.p90
    image = np.arange(40 * 36, dtype=float).reshape(40, 36)
    t = tiles(image, 16)
    assert t.shape == (4, 16, 16) and (t[1] == image[:16, 16:32]).all()  # row-major tiles, remainder dropped

