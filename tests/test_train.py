"""DDPM training: resumable bit for bit, checkpoints carry their config, bad input is one sentence."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.diffusion import checkpoint
from factory.diffusion.train import TrainConfig, prepare_data, state_path, train
from factory.errors import FactoryError

runner = CliRunner()


@pytest.fixture(scope="module")
def train_tif(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(1)
    img = (rng.random((64, 80)) > 0.97).astype(np.float32) * 100  # sparse blinks
    images.write_tiff(d / "img.tif", img, pixel_nm=10.0)
    return d / "img.tif"


def _cfg(tif, out, **kw) -> TrainConfig:
    base = dict(data=[str(tif)], out=str(out), preset="tiny", steps=6, batch_size=2, num_timesteps=50,
                checkpoint_every=3, seed=3)
    return TrainConfig(**{**base, **kw})


def _weights(path):
    ck = checkpoint.load(path)
    return {k: v.clone() for k, v in ck.model.state_dict().items()}, ck


def test_resume_is_bit_identical(train_tif, tmp_path):
    train(_cfg(train_tif, tmp_path / "a.safetensors"))
    train(_cfg(train_tif, tmp_path / "b.safetensors", steps=3))
    train(_cfg(train_tif, tmp_path / "b.safetensors"))  # resumes at step 3
    wa, ca = _weights(tmp_path / "a.safetensors")
    wb, cb = _weights(tmp_path / "b.safetensors")
    assert ca.card["steps"] == cb.card["steps"] == 6
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_records_config_and_pixel_size(train_tif, tmp_path):
    out = train(_cfg(train_tif, tmp_path / "m.safetensors", hr_pixel_nm=20.0))
    ck = checkpoint.load(out)
    assert ck.config.hr_pixel_nm == 20.0  # 10 nm image sum-binned by 2
    assert ck.config.schedule.num_timesteps == 50
    assert ck.config.unet.image_size == 16
    assert ck.card["train_patches"] > 0 and ck.card["final"] is True
    assert state_path(out).exists()


def test_checkpoint_carries_a_calibrated_x0_prior(train_tif, tmp_path):
    from factory.diffusion.schedule import alphas_cumprod

    cfg = _cfg(train_tif, tmp_path / "p.safetensors")
    ck = checkpoint.load(train(cfg))
    prior, abar = ck.config.x0_prior, alphas_cumprod(ck.config.schedule)
    assert prior.mean == pytest.approx(float(prepare_data(cfg, 16).train.mean()))
    assert prior.mean < -0.5  # sparse blinks: mostly background at -1
    # at t = T-1 (abar 6e-10) x0 from eps is noise x 4e4: the data mean must win there
    assert float(abar[-1]) < prior.below_abar <= 1.0


def test_calibration_finds_where_the_network_beats_the_mean(train_tif):
    """eps = 0 gives x0_hat = x_t / sqrt(a): good at low noise, hopeless at high noise."""
    from factory.diffusion.schedule import ScheduleConfig, alphas_cumprod
    from factory.diffusion.train import calibrate_x0_prior

    class ZeroEps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            return x * self.w

    data = prepare_data(_cfg(train_tif, "unused"), 16)
    for T in (200, 8):  # T below the 32-point grid: every timestep is tried
        sched = ScheduleConfig(num_timesteps=T)
        prior = calibrate_x0_prior(ZeroEps(), sched, data.train, float(data.train.mean()))
        assert 0.5 < prior.below_abar <= float(alphas_cumprod(sched)[0])  # loses until the noise is small


def test_patches_include_all_flips_and_holdout(train_tif):
    data = prepare_data(_cfg(train_tif, "unused", holdout_fraction=0.25), 16)
    assert data.train.shape[0] % 8 == 0 and data.train.shape[1:] == (16, 16)
    assert data.holdout.shape[0] > 0
    assert data.train.min() >= -1 and data.train.max() <= 1
    # the 8 transforms of the first patch are all present
    n = data.train.shape[0] // 8
    first = data.train[::n][:8]
    assert np.allclose(first, images.dihedral8(data.train[0]))


@pytest.mark.parametrize("kw, words", [
    (dict(preset="huge"), "unknown preset"),
    (dict(hr_pixel_nm=15.0), "integer multiple"),
    (dict(patch_size=15), "multiple of"),
    (dict(steps=0), "--steps"),
])
def test_bad_training_config(train_tif, tmp_path, kw, words):
    with pytest.raises(FactoryError, match=words):
        train(_cfg(train_tif, tmp_path / "x.safetensors", **kw))


def test_state_from_another_config_is_refused(train_tif, tmp_path):
    out = tmp_path / "m.safetensors"
    train(_cfg(train_tif, out, steps=3))
    with pytest.raises(FactoryError, match="another model config"):
        train(_cfg(train_tif, out, num_timesteps=60))


def test_cli_train_and_errors(train_tif, tmp_path):
    out = tmp_path / "cli.safetensors"
    r = runner.invoke(app, ["train", "--data", str(train_tif), "--out", str(out), "--preset", "tiny",
                            "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1"])
    assert r.exit_code == 0, r.output
    assert checkpoint.load(out).card["steps"] == 2
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "missing.tif"), "--out", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--data", str(train_tif), "--out", str(out), "--no-resume"])
    assert r.exit_code == 2 and "already exists" in r.output


def test_trains_on_a_localization_table(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(0, 640, 300), rng.uniform(0, 640, 50)])
    y = np.concatenate([np.full(300, 320.0), rng.uniform(0, 640, 50)])
    (tmp_path / "locs.csv").write_text("x,y\n" + "\n".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y)))
    out = train(_cfg(tmp_path / "locs.csv", tmp_path / "m.safetensors", hr_pixel_nm=20.0, steps=2))
    ck = checkpoint.load(out)
    assert ck.config.hr_pixel_nm == 20.0 and ck.card["training_images"] == ["locs.csv"]


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_non_finite_training_images_are_refused_before_training(tmp_path, fill):
    bad = tmp_path / "bad.tif"
    img = np.full((64, 64), fill, np.float32) if np.isnan(fill) else np.ones((64, 64), np.float32)
    img[3, 4] = fill
    images.write_tiff(bad, img, pixel_nm=10.0)
    out = tmp_path / "m.safetensors"
    with pytest.raises(FactoryError, match="NaN or infinite; training needs finite images"):
        train(_cfg(bad, out))
    assert not out.exists() and not state_path(out).exists()


def test_a_non_finite_loss_stops_training_and_leaves_the_weights(train_tif, tmp_path):
    from factory.diffusion.training import LoopConfig, TrainingState, train_step
    from factory.diffusion.unet import PRESETS, UNet

    loop = LoopConfig(steps=5, batch_size=2, seed=0)
    state = TrainingState(lambda: UNet(PRESETS["tiny"]), loop, torch.device("cpu"))
    before = {k: v.clone() for k, v in state.net.state_dict().items()}
    good = lambda net, gen: (net(torch.randn(2, 1, 16, 16, generator=gen), torch.zeros(2)) - 1).square().mean()  # noqa: E731
    train_step(state, good, loop, torch.device("cpu"))
    assert state.step == 1
    after_one = {k: v.clone() for k, v in state.net.state_dict().items()}
    assert any(not torch.equal(before[k], after_one[k]) for k in before)
    nan = lambda net, gen: good(net, gen) * float("nan")  # noqa: E731
    with pytest.raises(FactoryError, match="training stopped at step 2: the loss is nan") as err:
        train_step(state, nan, loop, torch.device("cpu"))
    assert "rerun" not in str(err.value)
    assert state.step == 1 and all(torch.equal(after_one[k], v) for k, v in state.net.state_dict().items())


@pytest.mark.parametrize("args, words", [
    (["--hr-pixel-nm", "0"], "--hr-pixel-nm must be a positive number of nm, got 0.0"),
    (["--data-pixel-nm", "0"], "--data-pixel-nm must be a positive number of nm, got 0.0"),
    (["--data-pixel-nm", "-5"], "--data-pixel-nm must be a positive number of nm"),
    (["--max-minutes", "-1"], "--max-minutes must be a positive number of minutes, got -1.0"),
    (["--lr", "1e38"], "--lr must be positive and at most 1"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
])
def test_cli_train_refuses_impossible_numbers_in_one_sentence(train_tif, tmp_path, args, words):
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", "--data", str(train_tif), "--out", str(out), "--preset", "tiny", "--steps", "1", *args])
    assert r.exit_code == 2, r.output
    assert words in r.output and r.output.strip().startswith("error:") and "Traceback" not in r.output
    assert not out.exists()


def test_fine_tuning_starts_from_the_source_weights_at_another_pixel_size(train_tif, tmp_path):
    """--init: a new run at another pixel size and patch size starts from the source's weights (one step at a
    tiny learning rate stays within it), its card says so, and a resume does not re-initialize."""
    src = train(_cfg(train_tif, tmp_path / "src.safetensors", hr_pixel_nm=20.0))
    ws, _ = _weights(src)
    out = tmp_path / "ft.safetensors"
    fine = dict(steps=1, lr=1e-9, patch_size=32, hr_pixel_nm=10.0, seed=5)  # another seed than the source's
    train(_cfg(train_tif, out, init=str(src), **fine))
    wf, ck = _weights(out)
    assert ck.config.hr_pixel_nm == 10.0 and ck.config.unet.image_size == 32
    assert all(torch.allclose(wf[k], ws[k], atol=1e-6) for k in ws)
    assert ck.card["initialized_from"] == f"{src} (model id {checkpoint.load(src).model_id})"
    scratch, _ = _weights(train(_cfg(train_tif, tmp_path / "scratch.safetensors", **fine)))  # the same run without --init
    assert not all(torch.allclose(scratch[k], ws[k], atol=1e-3) for k in ws)

    train(_cfg(train_tif, out, init=str(src), **{**fine, "steps": 4}))  # resumes at step 1
    assert checkpoint.load(out).card["steps"] == 4 and checkpoint.load(out).card["initialized_from"] == str(src)


def test_fine_tuning_refuses_another_network_in_one_sentence(train_tif, tmp_path):
    src = train(_cfg(train_tif, tmp_path / "src.safetensors", steps=1))
    r = runner.invoke(app, ["train", "--data", str(train_tif), "--out", str(tmp_path / "ft.safetensors"), "--preset",
                            "small", "--steps", "1", "--init", str(src)])
    assert r.exit_code == 2 and "network or noise schedule differs" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ft.safetensors").exists()
