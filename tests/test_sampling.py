"""``factory sample`` and :func:`sample_images`: happy path, determinism, every bad input is one sentence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.diffusion import checkpoint
from factory.diffusion.sampling import SamplerConfig, SamplerKind, sample_images
from factory.diffusion.schedule import Spacing
from factory.errors import FactoryError

runner = CliRunner()




def sample(*args: str):
    return runner.invoke(app, ["sample", *args])


def test_config_round_trip_and_validation():
    cfg = SamplerConfig(kind=SamplerKind.ddim, steps=25, eta=0.5, spacing=Spacing.linspace, clip_x0=False)
    assert SamplerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SamplerConfig(kind="dpmpp").kind is SamplerKind.dpmpp
    cfg.validate(2000)
    for bad, words in [(SamplerConfig(steps=0), "between 1 and"), (SamplerConfig(steps=51), "T=50"),
                       (SamplerConfig(kind=SamplerKind.ddim, eta=-0.1), "eta"),
                       (SamplerConfig(kind="euler"), "unknown sampler 'euler'"),
                       (SamplerConfig(kind=SamplerKind.dpmpp, eta=0.5), "only applies to the ddim"),
                       (SamplerConfig(spacing=Spacing.leading), "spacing")]:
        with pytest.raises(FactoryError, match=words):
            bad.validate(50)


def test_sample_images_sizes_and_range(tiny_model):
    ckpt = checkpoint.load(tiny_model)
    cfg = SamplerConfig(kind=SamplerKind.ddim, steps=5)
    hr = sample_images(ckpt, [0, 1], 0, cfg, size=32)  # fully convolutional: larger than the 16 px patches
    assert hr.shape == (2, 32, 32) and hr.dtype == np.float32
    assert hr.min() >= 0 and hr.max() <= 1 and hr.std() > 0.01
    assert sample_images(ckpt, [], 0, cfg).shape == (0, 16, 16)
    with pytest.raises(FactoryError, match="multiple of 2"):
        sample_images(ckpt, [0], 0, cfg, size=15)
    with pytest.raises(FactoryError, match="between 1 and"):
        sample_images(ckpt, [0], 0, SamplerConfig(steps=51))


@pytest.mark.parametrize("model, kind, steps", [("default", "ddim", 10), ("default", "dpmpp", 10), ("default20", "dpmpp", 10)])
def test_shipped_model_draws_sparse_filaments_not_bright_fields(model, kind, steps):
    """Held-out STORM patches: 1-3 % of pixels above 0.5, patch means 0.005-0.15. Before the x0 prior,
    half the shipped model's samples were bright textured fields (bright fraction 0.55)."""
    ckpt = checkpoint.load(model)
    assert ckpt.config.x0_prior is not None and ckpt.config.x0_prior.mean < -0.5
    hr = sample_images(ckpt, range(8), 0, SamplerConfig(kind=kind, steps=steps))  # (8, 64, 64) in [0, 1]
    assert (hr > 0.5).mean() < 0.08
    assert hr.mean(axis=(1, 2)).max() < 0.3
    assert (hr > 0.5).mean(axis=(1, 2)).min() > 0  # not blank either: every sample has bright structure


def test_cli_sample_happy_path(tiny_model, tmp_path):
    out = tmp_path / "s.tif"
    r = sample("--model", str(tiny_model), "--n", "5", "--sampler", "ddim", "--steps", "6", "--batch-size", "2",
               "--seed", "3", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "images/s" in r.output
    assert "sample ddim x6: 5/5 images" in r.output  # stderr is a log file here: a plain progress line, not a bar
    stack = images.read_stack(out)
    assert stack.data.shape == (5, 16, 16) and stack.data.dtype == np.float32
    assert stack.pixel_nm == pytest.approx(20.0)  # the model's HR pixel size travels with the images
    assert 0 <= stack.data.min() and stack.data.max() <= 1

    # same seed, other batch size -> the same images up to float batching effects
    r = sample("--model", str(tiny_model), "--n", "5", "--sampler", "ddim", "--steps", "6", "--batch-size", "5",
               "--seed", "3", "--out", str(out), "--overwrite")
    assert r.exit_code == 0, r.output
    assert np.abs(images.read_stack(out).data - stack.data).max() < 1e-5
    # another seed -> other images
    r = sample("--model", str(tiny_model), "--n", "5", "--sampler", "ddim", "--steps", "6", "--seed", "4",
               "--out", str(out), "--overwrite")
    assert r.exit_code == 0 and np.abs(images.read_stack(out).data - stack.data).max() > 0.01


def test_cli_same_seed_same_bytes(tiny_model, tmp_path):
    args = ["--model", str(tiny_model), "--n", "3", "--sampler", "ddpm", "--steps", "10", "--size", "8"]
    assert sample(*args, "--out", str(tmp_path / "a.tif")).exit_code == 0
    assert sample(*args, "--out", str(tmp_path / "b.tif")).exit_code == 0
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


@pytest.fixture(scope="module")
def bad_checkpoints(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_ckpt")
    good = tiny_model.read_bytes()
    (d / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (d / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(d / "foreign.safetensors"), metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("case, words", [
    ("missing", "no such checkpoint"),
    ("truncated", "corrupt or truncated"),
    ("random", "corrupt or truncated"),
    ("foreign", "not a factory checkpoint"),
    ("steps0", "--steps"),
    ("steps_too_many", "T=50"),
    ("unknown_sampler", "unknown sampler 'euler'"),
    ("n0", "--n must be at least 1"),
    ("exists", "already exists"),
    ("bad_size", "--size must be a positive multiple of 2"),
    ("eta_not_ddim", "only applies to the ddim"),
    ("batch0", "--batch-size"),
])
def test_cli_bad_input_is_one_sentence(case, words, tiny_model, bad_checkpoints, tmp_path):
    model = {"missing": tmp_path / "nope.safetensors", "truncated": bad_checkpoints / "truncated.safetensors",
             "random": bad_checkpoints / "random.safetensors",
             "foreign": bad_checkpoints / "foreign.safetensors"}.get(case, tiny_model)
    out = tmp_path / "out.tif"
    extra = {"steps0": ["--steps", "0"], "steps_too_many": ["--steps", "51"], "unknown_sampler": ["--sampler", "euler"],
             "n0": ["--n", "0"], "bad_size": ["--size", "15"], "eta_not_ddim": ["--sampler", "dpmpp", "--eta", "0.3"],
             "batch0": ["--batch-size", "0"]}.get(case, [])
    if case == "exists":
        out.write_bytes(b"keep me")
    r = sample("--model", str(model), "--n", "2", "--steps", "4", "--out", str(out), *extra)
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
    assert r.output.strip().startswith("error:") and r.output.count("error:") == 1
    assert out.read_bytes() == b"keep me" if case == "exists" else not out.exists()


def test_eta_is_bounded_by_the_ddim_variance_formula():
    SamplerConfig(kind=SamplerKind.ddim, eta=1.0).validate(50)
    for eta in (1.5, 2.0, float("nan"), float("inf")):
        with pytest.raises(FactoryError, match="--eta must be between 0 and 1"):
            SamplerConfig(kind=SamplerKind.ddim, eta=eta).validate(50)


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--sampler", "ddim", "--eta", "2"], "--eta must be between 0 and 1"),
])
def test_cli_sample_refuses_a_negative_seed_and_eta_above_one(tiny_model, tmp_path, args, words):
    out = tmp_path / "s.tif"
    r = sample("--model", str(tiny_model), "--n", "1", "--steps", "2", "--out", str(out), *args)
    assert r.exit_code == 2 and words in r.output and r.output.strip().startswith("error:"), r.output
    assert not out.exists()


def test_the_size_message_names_the_option_the_user_typed(tiny_model, tmp_path):
    from factory.pipeline.plan import resolve
    from factory.pipeline.spec import GenerateConfig
    from factory.structures import StructureConfig

    with pytest.raises(FactoryError, match=r"^--hr-size must be a positive multiple of 2 px for this model, got 15\.$"):
        resolve(GenerateConfig(n=1, out=tmp_path / "s.zarr", structure=StructureConfig(model=str(tiny_model)), hr_size=15))
    r = sample("--model", str(tiny_model), "--n", "1", "--steps", "2", "--size", "15", "--out", str(tmp_path / "s.tif"))
    assert r.exit_code == 2 and "--size must be a positive multiple" in r.output and "--hr-size" not in r.output


def test_generate_refuses_eta_above_one(tiny_model, tmp_path):
    from factory.pipeline.plan import resolve
    from factory.pipeline.spec import GenerateConfig
    from factory.structures import StructureConfig

    with pytest.raises(FactoryError, match="--eta must be between 0 and 1"):
        resolve(GenerateConfig(n=1, out=tmp_path / "s.zarr",
                               structure=StructureConfig(model=str(tiny_model), sampler={"kind": "ddim", "steps": 4, "eta": 2.0})))
