"""The mathematical microtubule model: determinism, chain statistics, output contract, the CLI."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.errors import FactoryError
from factory.simulate import SimulationConfig, Texture, filaments, image_rng, simulate

TINY = SimulationConfig(size_px=48, pixel_nm=20.0, filaments=(2, 4), length_nm=(800.0, 3000.0))


@pytest.mark.parametrize("texture", list(Texture))
@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_images_different_seed_different(seed, texture):
    cfg = dataclasses.replace(TINY, texture=texture)
    a, b = simulate(cfg, 3, seed), simulate(cfg, 3, seed)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, simulate(cfg, 3, seed + 1))
    assert not np.array_equal(a[0], a[1])  # images of one run differ too


def test_image_i_does_not_depend_on_n():
    np.testing.assert_array_equal(simulate(TINY, 4, 3), simulate(TINY, 8, 3)[:4])


@pytest.mark.parametrize("texture", list(Texture))
def test_output_contract(texture):
    stack = simulate(dataclasses.replace(TINY, texture=texture), 3, 1)
    assert stack.shape == (3, 48, 48) and stack.dtype == np.float32
    assert stack.min() >= 0.0 and stack.max() <= 1.0
    for img in stack:
        assert img.max() == 1.0  # scaled like a training image: 99.9th percentile -> 1
        assert 0.005 < np.count_nonzero(img > 0.1) / img.size < 0.6  # filaments: neither empty nor a fog


def test_punctate_texture_scatters_around_its_smooth_expectation():
    """Same seed -> same filaments; the punctate image is a noisy version of the smooth one."""
    cfg = dataclasses.replace(TINY, size_px=64, background_per_um2=0.0)
    smooth = simulate(dataclasses.replace(cfg, texture=Texture.SMOOTH), 2, 5)
    punctate = simulate(cfg, 2, 5)
    for s, p in zip(smooth, punctate):
        assert np.corrcoef(s.ravel(), p.ravel())[0, 1] > 0.6
    other = simulate(cfg, 2, 6)
    assert np.corrcoef(smooth[0].ravel(), other[0].ravel())[0, 1] < 0.3


@pytest.mark.parametrize("lp_nm", [2_000.0, 8_000.0])
def test_chains_have_the_requested_persistence_length(lp_nm):
    """2-D worm-like chain: <cos(theta(s) - theta(0))> = exp(-s / (2 Lp)), fitted on the chain coordinates;
    and, more sharply, Var(theta(s + ds) - theta(s)) = ds / Lp."""
    F = 300
    cfg = dataclasses.replace(TINY, filaments=(F, F), length_nm=(2 * lp_nm, 2 * lp_nm), persistence_length_nm=lp_nm, step_nm=10.0)
    fil = filaments(cfg, image_rng(11, 0))
    x, y = fil.x_nm.reshape(F, -1), fil.y_nm.reshape(F, -1)  # (F, K) equal lengths
    np.testing.assert_allclose(np.hypot(np.diff(x), np.diff(y)), cfg.step_nm)
    angle = np.unwrap(np.arctan2(np.diff(y), np.diff(x)), axis=1)  # (F, K-1) tangent from coordinates
    lags = np.arange(10, int(lp_nm / cfg.step_nm) + 1, 10)  # s from 100 nm to Lp
    mean_cos = np.array([np.cos(angle[:, k:] - angle[:, :-k]).mean() for k in lags])
    slope = np.polyfit(lags * cfg.step_nm, np.log(mean_cos), 1, w=mean_cos)[0]  # log <cos> = -s / (2 Lp)
    assert -1 / (2 * slope) == pytest.approx(lp_nm, rel=0.2)
    assert cfg.step_nm / np.diff(angle).var() == pytest.approx(lp_nm, rel=0.02)


def test_every_filament_passes_through_the_field():
    cfg = dataclasses.replace(TINY, filaments=(30, 30))
    fil = filaments(cfg, image_rng(2, 0))
    side = cfg.size_px * cfg.pixel_nm
    inside = (fil.x_nm >= 0) & (fil.x_nm <= side) & (fil.y_nm >= 0) & (fil.y_nm <= side)
    assert set(fil.chain[inside]) == set(range(30))
    assert fil.x_nm.min() < 0 or fil.x_nm.max() > side or fil.y_nm.min() < 0 or fil.y_nm.max() > side  # some cross it


@pytest.mark.parametrize("change, match", [
    ({"size_px": 0}, "size_px must be positive"),
    ({"persistence_length_nm": -1.0}, "persistence_length_nm must be positive"),
    ({"filaments": (5, 2)}, "filaments must be a range"),
    ({"length_nm": (0.0, 100.0)}, "length_nm must be a range"),
    ({"labels_per_um": float("nan")}, "labels_per_um must be zero or positive"),
    ({"step_nm": 50.0}, "must not exceed the pixel size"),
])
def test_impossible_configs_are_refused(change, match):
    with pytest.raises(FactoryError, match=match):
        simulate(dataclasses.replace(TINY, **change), 1)
    with pytest.raises(FactoryError, match="at least 1"):
        simulate(TINY, 0)


# --- the CLI -----------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_simulate_writes_a_stack_with_its_pixel_size(tmp_path):
    out = tmp_path / "sims.tif"
    args = ["simulate", "--n", "3", "--size", "40", "--pixel-nm", "15", "--seed", "4", "--filaments", "2", "3",
            "--length-nm", "500", "2000", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    stack = images.read_stack(out)
    assert stack.data.shape == (3, 40, 40) and stack.pixel_nm == pytest.approx(15.0)
    cfg = SimulationConfig(size_px=40, pixel_nm=15.0, filaments=(2, 3), length_nm=(500.0, 2000.0))
    np.testing.assert_array_equal(stack.data, simulate(cfg, 3, 4))
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, args[:-2] + ["--texture", "smooth", "--overwrite", "--out", str(out)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(images.read_stack(out).data, simulate(dataclasses.replace(cfg, texture=Texture.SMOOTH), 3, 4))


@pytest.mark.parametrize("args, match", [
    (["--n", "0"], "--n must be at least 1"),
    (["--size", "0"], "--size must be a positive number of pixels"),
    (["--size", "-8"], "--size must be a positive number of pixels"),
    (["--texture", "wavy"], "--texture must be one of punctate, smooth"),
    (["--persistence-length-nm", "0"], "persistence_length_nm must be positive"),
    (["--background-blinks", "-1"], "background_blinks must be zero or positive"),
    (["--filaments", "3", "1"], "filaments must be a range"),
])
def test_cli_simulate_bad_inputs_are_one_sentence(tmp_path, args, match):
    res = runner.invoke(app, ["simulate", *args, "--out", str(tmp_path / "s.tif")])
    assert res.exit_code == 2
    assert match in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "s.tif").exists()


def test_cli_simulate_unwritable_output_folder(tmp_path):
    res = runner.invoke(app, ["simulate", "--n", "1", "--size", "16", "--out", str(tmp_path / "no" / "s.tif")])
    assert res.exit_code == 2 and "does not exist" in res.output
