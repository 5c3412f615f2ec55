"""``factory degrade`` through the real CLI (typer CliRunner): happy paths and every bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.optics import DegradationConfig, degrade, expected_photons
from factory.seeding import degradation_rng

runner = CliRunner()
HR_PIXEL_NM = 40.0


def hr_image(shape, seed=0) -> np.ndarray:
    """Random sparse structure in [0, 1], float32."""
    return (np.random.default_rng(seed).random(shape) ** 6).astype(np.float32)


@pytest.fixture
def hr_tif(tmp_path):
    path = tmp_path / "hr.tif"
    images.write_tiff(path, hr_image((32, 48)), pixel_nm=HR_PIXEL_NM)
    return path


@pytest.fixture
def hr_stack(tmp_path):
    path = tmp_path / "stack.tif"
    images.write_tiff(path, hr_image((3, 32, 32), seed=1), pixel_nm=HR_PIXEL_NM)
    return path


def run(*args):
    return runner.invoke(app, ["degrade", *map(str, args)])


def expect_error(result, text: str) -> None:
    """Exit 2 with one red sentence containing text, never a traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert text in lines[0] and "Traceback" not in result.output


def test_2d_image_gives_2d_frame_with_lr_pixel_size_and_matches_the_api(hr_tif, tmp_path):
    out = tmp_path / "lr.tif"
    result = run(hr_tif, "--out", out, "--seed", 5, "--photons", 300, "--psf", "erf")
    assert result.exit_code == 0, result.output
    lr = tifffile.imread(out)
    assert lr.shape == (8, 12) and lr.dtype == np.uint16
    assert images.read_stack(out).pixel_nm == pytest.approx(4 * HR_PIXEL_NM, rel=1e-6)
    hr = images.read_stack(hr_tif).data[0]
    rng = degradation_rng(5, 0)
    params = DegradationConfig(photons=300, psf_model="erf").draw(rng)
    np.testing.assert_array_equal(lr, degrade(hr / hr.max(), HR_PIXEL_NM, params, rng))
    meta = json.loads((tmp_path / "lr.degradation.json").read_text())
    assert meta["images"] == [params.to_record()] and meta["lr_pixel_nm"] == 4 * HR_PIXEL_NM


def test_stack_draws_each_image_from_its_own_rng_and_config_ranges(hr_stack, tmp_path):
    config = tmp_path / "ranges.toml"
    config.write_text("schema_version = 1\ndownsample = 2\nphotons = [100, 2000]\nbackground_photons = [0, 20]\n")
    out = tmp_path / "lr.tif"
    result = run(hr_stack, "--out", out, "--config", config, "--read-noise", 3, "--seed", 11)
    assert result.exit_code == 0, result.output
    lr = tifffile.imread(out)
    assert lr.shape == (3, 16, 16) and lr.dtype == np.uint16
    assert images.read_stack(out).pixel_nm == pytest.approx(2 * HR_PIXEL_NM, rel=1e-6)
    cfg = DegradationConfig(downsample=2, photons=(100, 2000), background_photons=(0, 20), read_noise_e=3)
    hr = images.read_stack(hr_stack).data
    meta = json.loads((tmp_path / "lr.degradation.json").read_text())
    for i in range(3):
        rng = degradation_rng(11, i)
        params = cfg.draw(rng)
        np.testing.assert_array_equal(lr[i], degrade(hr[i] / hr[i].max(), HR_PIXEL_NM, params, rng))
        assert meta["images"][i] == params.to_record()
    assert len({r["photons"] for r in meta["images"]}) == 3  # drawn per image


def test_no_noise_writes_the_float_expectation(hr_tif, tmp_path):
    out = tmp_path / "expected.tif"
    result = run(hr_tif, "--out", out, "--no-noise", "--na", 1.4, "--wavelength-nm", 670, "--background", 0)
    assert result.exit_code == 0, result.output
    lr = tifffile.imread(out)
    assert lr.dtype == np.float32 and lr.max() == pytest.approx(1000.0, rel=1e-5)
    record = json.loads((tmp_path / "expected.degradation.json").read_text())["images"][0]
    assert record["psf_sigma_nm"] == pytest.approx(0.21 * 670 / 1.4)
    hr = images.read_stack(hr_tif).data[0]
    rng = degradation_rng(0, 0)
    params = DegradationConfig(na=1.4, wavelength_nm=670, background_photons=0).draw(rng)
    np.testing.assert_allclose(lr, expected_photons(hr / hr.max(), HR_PIXEL_NM, params), rtol=1e-6)


def test_same_seed_same_file_other_seed_differs(hr_tif, tmp_path):
    outs = [tmp_path / f"{name}.tif" for name in ("a", "b", "c")]
    for out, seed in zip(outs, (1, 1, 2)):
        assert run(hr_tif, "--out", out, "--seed", seed).exit_code == 0
    a, b, c = (tifffile.imread(o) for o in outs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pixel_size_from_the_option_when_metadata_lacks_it(tmp_path):
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, hr_image((16, 16)))
    expect_error(run(bare, "--out", tmp_path / "lr.tif"), "--hr-pixel-nm")
    assert run(bare, "--out", tmp_path / "lr.tif", "--hr-pixel-nm", 25).exit_code == 0
    assert images.read_stack(tmp_path / "lr.tif").pixel_nm == pytest.approx(100.0, rel=1e-6)


def test_existing_output_is_kept_without_overwrite(hr_tif, tmp_path):
    out = tmp_path / "lr.tif"
    out.write_bytes(b"precious")
    expect_error(run(hr_tif, "--out", out), "already exists")
    assert out.read_bytes() == b"precious"
    assert run(hr_tif, "--out", out, "--overwrite").exit_code == 0
    assert tifffile.imread(out).shape == (8, 12)


@pytest.mark.parametrize("case,text", [
    ("missing", "no such file"),
    ("rgb", "RGB"),
    ("4d", "4-D"),
    ("downsample", "--downsample 5 does not divide the image size 32x48"),
    ("photons", "photons must be >= 0"),
    ("background", "--background (background_photons) must be >= 0"),
    ("folder", "does not exist"),
    ("both_psf_widths", "either psf_sigma_nm or na"),
])
def test_bad_inputs_give_one_sentence_and_exit_2(hr_tif, tmp_path, case, text):
    out = tmp_path / "lr.tif"
    src, extra = hr_tif, []
    if case == "missing":
        src = tmp_path / "nope.tif"
    elif case == "rgb":
        src = tmp_path / "rgb.tif"
        tifffile.imwrite(src, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    elif case == "4d":
        src = tmp_path / "4d.tif"
        tifffile.imwrite(src, np.zeros((2, 2, 16, 16), np.float32))
    elif case == "downsample":
        extra = ["--downsample", 5]
    elif case == "photons":
        extra = ["--photons", -5]
    elif case == "background":
        extra = ["--background", -1]
    elif case == "folder":
        out = tmp_path / "missing" / "lr.tif"
    elif case == "both_psf_widths":
        extra = ["--psf-sigma-nm", 90, "--na", 1.4, "--wavelength-nm", 670]
    expect_error(run(src, "--out", out, *extra), text)
    assert not out.exists()
