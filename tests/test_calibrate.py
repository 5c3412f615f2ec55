"""factory.calibrate and `factory calibrate`: recover known optics from synthetic images made by factory.optics.

Assumptions of every case (as the calibration states them): the field is static, part of it is
background-only (thin filaments and spots cover a few % of it), the camera has no EM register, and
QE is known (0.8: only QE x photons is measurable). The truth is the PSF sigma of 95 nm plus the
structure's own width (a 25 nm tube, 5 nm precision, 40 nm HR pixels: about 96 nm); tolerances
are the issue's: PSF sigma within 10 %, offset within 1 ADU (with dark frames or >= 20 frames;
from one frame alone the offset is only as good as its stated uncertainty), photons within 15 %.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from factory import images
from factory.calibrate import CalibrateConfig, calibrate, write_toml
from factory.calibrate.camera import fit_camera, temporal_moments
from factory.cli import app
from factory.optics import DegradationConfig, DegradationParams, expected_photons
from factory.optics.camera import detect
from factory.store import schemas
from factory.simulate import SimulationConfig, simulate_image

runner = CliRunner()
HR_NM, LR_NM = 40.0, 160.0
TRUTH = DegradationParams(photons=1000.0, background_photons=10.0, background_variation=0.3, background_sigma_nm=2000.0,
                          background_seed=3, psf_sigma_nm=95.0, qe=0.8, read_noise_e=1.6, gain_e_per_adu=0.5,
                          offset_adu=100.0, downsample=4)


def field(seed: int = 0) -> np.ndarray:
    """(1024, 1024) HR density at 40 nm: thin filaments (a few % of the field) and isolated spots."""
    cfg = SimulationConfig(size_px=1024, pixel_nm=HR_NM, background_per_um2=0.0, texture="smooth", filaments=(8, 14),
                           linker_nm=0.0, precision_nm=5.0)
    hr = simulate_image(cfg, np.random.default_rng(seed)).astype(np.float64)
    ys, xs = np.random.default_rng(seed + 1).integers(16, 1008, (2, 40))
    hr[ys, xs] = 1.0
    return hr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibrate")
    hr = field()
    expected = expected_photons(hr, HR_NM, TRUTH)  # (256, 256) photons: signal + background
    images.write_tiff(d / "wf.tif", detect(expected, TRUTH, np.random.default_rng(1)), pixel_nm=LR_NM)
    images.write_tiff(d / "wf20.tif", detect(np.broadcast_to(expected, (20, 256, 256)), TRUTH, np.random.default_rng(2)), pixel_nm=LR_NM)
    dark = DegradationParams(**{**TRUTH.to_record(), "photons": 0.0, "background_photons": 0.0})
    images.write_tiff(d / "dark.tif", detect(np.zeros((8, 256, 256)), dark, np.random.default_rng(3)), pixel_nm=LR_NM)
    images.write_tiff(d / "flat3.tif", detect(np.full((3, 64, 64), 500.0), TRUTH, np.random.default_rng(5)), pixel_nm=LR_NM)
    images.write_tiff(d / "sr.tif", hr.astype(np.float32), pixel_nm=HR_NM)
    images.write_tiff(d / "nopixel.tif", detect(expected, TRUTH, np.random.default_rng(1)), pixel_nm=None)
    dense = DegradationParams(**{**TRUTH.to_record(), "photon_scale": "density", "photons": 150.0})
    unit = images.normalize_unit(hr.astype(np.float32))[0]  # scaled like a training image, as calibrate scales the reference
    images.write_tiff(d / "wf_density.tif", detect(expected_photons(unit, HR_NM, dense), dense, np.random.default_rng(4)), pixel_nm=LR_NM)
    return d


def estimates(cal) -> dict:
    return {e.name: e for e in cal.estimates}


def check_common(cal, psf_rel=0.10, background_rel=0.10):
    e = estimates(cal)
    assert e["psf_sigma_nm"].value == pytest.approx(95.0, rel=psf_rel)
    assert e["photons (field peak)"].value == pytest.approx(1000.0, rel=0.15)
    if background_rel is not None:  # photons per pixel above the offset: only as good as the offset
        assert e["background_photons"].value == pytest.approx(10.0, rel=background_rel)
    assert cal.config.downsample == 4 and cal.config.photon_scale.value == "peak"
    assert cal.config.photons.low <= cal.config.photons.high <= 1000.0 * 1.15  # tiles' peaks: at most the field's
    return e


def test_stack_of_frames_recovers_the_camera_by_photon_transfer(data):
    cal = calibrate(CalibrateConfig(widefield=data / "wf20.tif"))
    e = check_common(cal)
    assert e["offset_adu"].value == pytest.approx(100.0, abs=1.0)
    assert e["gain_e_per_adu"].value == pytest.approx(0.5, rel=0.05)
    assert e["read_noise_e"].value == pytest.approx(1.6, rel=0.15)
    assert abs(e["offset_adu"].value - 100.0) < 4 * e["offset_adu"].sd  # the stated uncertainty is honest
    assert cal.config.background_variation.low == pytest.approx(0.3, abs=0.1)


def test_one_frame_with_dark_frames(data):
    cal = calibrate(CalibrateConfig(widefield=data / "wf.tif", dark=data / "dark.tif"))
    e = check_common(cal)
    assert e["offset_adu"].value == pytest.approx(100.0, abs=1.0) and e["offset_adu"].source == "dark frames"
    assert e["read_noise_e"].value == pytest.approx(1.6, rel=0.15)


def test_one_frame_alone_states_its_assumption_and_an_honest_offset_error(data):
    cal = calibrate(CalibrateConfig(widefield=data / "wf.tif"))
    e = check_common(cal, background_rel=None)
    assert abs(e["offset_adu"].value - 100.0) < 3 * e["offset_adu"].sd
    assert abs(e["background_photons"].value - 10.0) < 3 * e["background_photons"].sd
    if "read noise assumed" in e["offset_adu"].source:  # flat enough that offset and read noise were not separable
        assert any("read noise assumed" in n for n in cal.notes) and e["read_noise_e"].value == 1.6


def test_reference_fits_the_psf_and_the_density_photons(data):
    cal = calibrate(CalibrateConfig(widefield=data / "wf.tif", dark=data / "dark.tif", reference=data / "sr.tif"))
    e = check_common(cal, psf_rel=0.03)
    assert "reference" in e["psf_sigma_nm"].source
    dense = calibrate(CalibrateConfig(widefield=data / "wf_density.tif", dark=data / "dark.tif", reference=data / "sr.tif",
                                      photon_scale="density"))
    assert dense.config.photon_scale.value == "density"
    assert dense.config.photons.low == pytest.approx(150.0, rel=0.15)  # photons per unit density per HR pixel
    assert estimates(dense)["psf_sigma_nm"].value == pytest.approx(95.0, rel=0.03)


def test_written_config_is_a_valid_degradation_config(data, tmp_path):
    import jsonschema

    cal = calibrate(CalibrateConfig(widefield=data / "wf.tif", dark=data / "dark.tif"))
    path = write_toml(cal, tmp_path / "optics.toml")
    loaded = DegradationConfig.load(path)
    assert loaded == cal.config
    jsonschema.validate(loaded.to_dict(), schemas.load("degradation.v1.json"))
    text = path.read_text()
    assert "# offset_adu" in text and "psf_sigma_nm" in text and "dark frames" in text
    params = loaded.draw(np.random.default_rng(0))  # it drives the optical model
    assert params.psf_sigma_nm == pytest.approx(95.0, rel=0.1)


def test_temporal_photon_transfer_matches_the_known_camera_on_pure_poisson_data():
    """Independent of images: Poisson electrons x G + offset + Gaussian read noise, rounded."""
    rng = np.random.default_rng(0)
    lam = np.exp(rng.uniform(math.log(5), math.log(2000), 64 * 64))  # (P,) expected electrons
    adu = np.rint(2.0 * rng.poisson(lam, (30, lam.size)) + 100.0 + 3.2 * rng.standard_normal((30, lam.size)))
    fit = fit_camera(temporal_moments(adu.reshape(30, 64, 64)))
    assert fit.gain_e_per_adu == pytest.approx(0.5, rel=0.01)
    assert fit.offset_adu == pytest.approx(100.0, abs=3 * fit.sd_offset_adu)
    assert fit.read_noise_e == pytest.approx(1.6, rel=0.1)


def test_cli_writes_config_prints_table_and_compares_store_contrast(data, tmp_path, small_store):
    out = tmp_path / "optics.toml"
    r = runner.invoke(app, ["calibrate", str(data / "wf.tif"), "--dark", str(data / "dark.tif"), "--out", str(out),
                            "--compare", str(small_store)])
    assert r.exit_code == 0, r.output
    assert "psf_sigma_nm" in r.stdout and "offset_adu" in r.stdout and "LR contrast p99.8/p1" in r.stdout
    assert str(small_store) in r.stdout and DegradationConfig.load(out).downsample == 4
    r = runner.invoke(app, ["calibrate", str(data / "wf.tif"), "--dark", str(data / "dark.tif"), "--out", str(out),
                            "--json", "--overwrite"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and {"estimates", "config", "notes", "contrast"} <= set(doc)


def test_store_contrast_equals_the_manifest_camera_arithmetic(small_store):
    from factory.calibrate.contrast import store_contrast
    from factory.store import Store

    store = Store.open(small_store)
    m = store.manifest(["offset_adu", "gain_e_per_adu", "em_gain"]).to_pydict()
    lr = store.lr[:].astype(np.float64)  # (N, h, w) ADU
    electrons = (lr - np.asarray(m["offset_adu"])[:, None, None]) * (np.asarray(m["gain_e_per_adu"]) / np.asarray(m["em_gain"]))[:, None, None]
    lo, hi = np.percentile(electrons, (1.0, 99.8), axis=(1, 2))
    assert store_contrast(str(small_store)).median == pytest.approx(np.median(hi / np.maximum(lo, 1.0)), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["missing.tif"], "no such file"),
    (["nopixel.tif"], "--pixel-nm"),
    (["wf.tif", "--reference", "sr.tif", "--reference-pixel-nm", "30"], "not an integer multiple"),
    (["wf.tif", "--reference", "wf20.tif"], "one 2-D image"),
    (["wf.tif", "--photon-scale", "density"], "needs --reference"),
    (["wf.tif", "--flat", "flat3.tif"], "at least 6 frames"),
])
def test_cli_bad_input_is_one_sentence(data, tmp_path, args, message):
    args = [str(data / a) if a.endswith(".tif") else a for a in args]
    r = runner.invoke(app, ["calibrate", *args, "--out", str(tmp_path / "o.toml")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.toml").exists()


def test_cli_refuses_to_overwrite(data, tmp_path):
    (tmp_path / "o.toml").write_text("keep")
    r = runner.invoke(app, ["calibrate", str(data / "wf.tif"), "--out", str(tmp_path / "o.toml")])
    assert r.exit_code == 2 and "--overwrite" in r.output and (tmp_path / "o.toml").read_text() == "keep"
