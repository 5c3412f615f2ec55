"""Checkpoints: exact round trip, model id = file sha256, bad files are one FactoryError, loading runs no code."""
from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import safetensors.torch
import torch

from factory.diffusion import checkpoint
from factory.diffusion.checkpoint import ModelConfig, X0Prior
from factory.diffusion.schedule import ScheduleConfig
from factory.diffusion.unet import PRESETS, UNet
from factory.errors import FactoryError

CONFIG = ModelConfig(PRESETS["tiny"], ScheduleConfig(num_timesteps=50), hr_pixel_nm=40.0)


def random_unet(seed: int) -> UNet:
    """A tiny UNet with every weight random (the zero-initialized output layers too), so outputs are not all 0."""
    torch.manual_seed(seed)
    net = UNet(CONFIG.unet)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    net = random_unet(0)
    card = {"name": "test", "attribution": "Inês Cunha, CC-BY-4.0 — example", "steps": 3}
    model_id = checkpoint.save(tmp_path / "m.safetensors", net, CONFIG, card)
    ck = checkpoint.load(tmp_path / "m.safetensors")
    assert ck.config == CONFIG and ck.card == card and ck.path == tmp_path / "m.safetensors"
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 40.0])
    with torch.no_grad():
        expected = net(x, t)
        assert expected.abs().max() > 0.1
        assert torch.equal(ck.model(x, t), expected)
    assert not any(p.requires_grad for p in ck.model.parameters()) and not ck.model.training
    assert model_id == ck.model_id == hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()


def test_model_id_is_stable_and_tracks_weights(tmp_path):
    net = random_unet(1)
    a = checkpoint.save(tmp_path / "a.safetensors", net, CONFIG)
    b = checkpoint.save(tmp_path / "b.safetensors", net, CONFIG)
    assert a == b  # same weights + config -> same bytes -> same id
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3
    c = checkpoint.save(tmp_path / "c.safetensors", net, CONFIG)
    assert c != a and checkpoint.load(tmp_path / "c.safetensors").model_id == c


def test_config_round_trip():
    for preset in PRESETS.values():
        for prior in (None, X0Prior(mean=-0.88, below_abar=0.06)):
            cfg = ModelConfig(preset, ScheduleConfig(), 20.0, prior)
            assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert "x0_prior" not in CONFIG.to_dict()  # older checkpoints (and training states) have no such key


def test_x0_prior_survives_save_and_load(tmp_path):
    cfg = ModelConfig(CONFIG.unet, CONFIG.schedule, CONFIG.hr_pixel_nm, X0Prior(mean=-0.5, below_abar=0.125))
    checkpoint.save(tmp_path / "m.safetensors", random_unet(0), cfg)
    assert checkpoint.load(tmp_path / "m.safetensors").config.x0_prior == X0Prior(-0.5, 0.125)


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ck") / "good.safetensors"
    checkpoint.save(path, random_unet(2), CONFIG)
    return path.read_bytes()


@pytest.mark.parametrize("case, words", [
    ("truncated", "corrupt or truncated"),
    ("random_bytes", "corrupt or truncated"),
    ("empty", "corrupt or truncated"),
    ("foreign_safetensors", "not a factory checkpoint"),
    ("newer_version", "newer than this factory supports"),
    ("wrong_weights", "weights do not match"),
    ("missing", "no such checkpoint file"),
])
def test_bad_files_raise_one_sentence(case, words, good_bytes, tmp_path):
    path = tmp_path / f"{case}.safetensors"
    if case == "truncated":
        path.write_bytes(good_bytes[: len(good_bytes) - 100])
    elif case == "random_bytes":
        path.write_bytes(bytes(range(256)) * 16)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "foreign_safetensors":
        safetensors.torch.save_file({"weight": torch.ones(4)}, str(path))
    elif case == "newer_version":
        safetensors.torch.save_file({"weight": torch.ones(4)}, str(path),
                                    metadata={"format": checkpoint.FORMAT, "format_version": "99", "model": "{}"})
    elif case == "wrong_weights":
        safetensors.torch.save_file({"weight": torch.ones(4)}, str(path),
                                    metadata={"format": checkpoint.FORMAT, "format_version": "1",
                                              "model": json.dumps(CONFIG.to_dict()), "card": "{}"})
    with pytest.raises(FactoryError, match=words) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert "\n" not in message and message.endswith(".") and str(path) in message


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["raw_pickle", "torch_save"])
def test_loading_executes_no_code(container, tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.safetensors"
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state": _Payload(marker)}, path)
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))  # the payload really does run when unpickled
    assert (tmp_path / "control").exists()
    with pytest.raises(FactoryError, match="corrupt or truncated"):
        checkpoint.load(path)
    assert not marker.exists()


def _crafted(path, config: dict, tensors: dict | None = None) -> None:
    safetensors.torch.save_file(tensors or {"weight": torch.ones(4)}, str(path),
                                metadata={"format": checkpoint.FORMAT, "format_version": "1",
                                          "model": json.dumps(config), "card": "{}"})


def test_non_finite_weights_are_refused_on_load(tmp_path):
    net = random_unet(3)
    with torch.no_grad():
        next(net.parameters()).view(-1)[5] = float("nan")
    checkpoint.save(tmp_path / "nan.safetensors", net, CONFIG)
    with pytest.raises(FactoryError, match=r"1 weight tensor\(s\) hold NaN or infinite values") as err:
        checkpoint.load(tmp_path / "nan.safetensors")
    assert "\n" not in str(err.value) and "rerun" not in str(err.value)


@pytest.mark.parametrize("change, words", [
    ({"unet": {"base_channels": 10_000_000}}, "base_channels must be an integer in 1..4096, got 10000000"),
    ({"unet": {"base_channels": 4096, "channel_mult": [64, 64]}}, "parameters, more than the 200,000,000"),
    ({"unet": {"num_heads": 3}}, "num_heads=3 does not divide"),
    ({"schedule": {"num_timesteps": 10**9}}, "num_timesteps must be an integer in 1..100000"),
    ({"hr_pixel_nm": 0.0}, "HR pixel size must be a positive number of nm, got 0.0"),
    ({"hr_pixel_nm": -20.0}, "HR pixel size must be a positive number of nm, got -20.0"),
])
def test_crafted_configs_are_refused_in_one_sentence_before_allocating(tmp_path, change, words):
    import time

    d = CONFIG.to_dict()
    for key, value in change.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "crafted.safetensors"
    _crafted(path, d)
    t0 = time.perf_counter()
    with pytest.raises(FactoryError, match=words) as err:
        checkpoint.load(path)
    assert time.perf_counter() - t0 < 5  # refused from the numbers, not after trying to build the network
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))


def test_cli_sample_refuses_a_checkpoint_with_pixel_size_zero(tmp_path):
    from typer.testing import CliRunner

    from factory.cli import app

    d = CONFIG.to_dict()
    d["hr_pixel_nm"] = 0.0
    path = tmp_path / "zero.safetensors"
    _crafted(path, d, {k: v.contiguous() for k, v in random_unet(0).state_dict().items()})
    r = CliRunner().invoke(app, ["sample", "--model", str(path), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s.tif")])
    assert r.exit_code == 2 and "HR pixel size must be a positive" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s.tif").exists()


@pytest.mark.parametrize("name, pixel_nm", [("default", 40.0), ("default20", 20.0)])
def test_the_shipped_models_still_load(name, pixel_nm):
    ck = checkpoint.load(name)
    assert ck.kind.value == "factory-ddpm" and ck.config.hr_pixel_nm == pixel_nm and ck.config.x0_prior is not None
    assert checkpoint.SHIPPED[name].stat().st_size < 20e6 and "CC-BY-4.0" in ck.card["attribution"]
    if name == "default20":  # fine-tuned from the shipped 40 nm model, and says so
        assert ck.card["initialized_from"].startswith("default (model id ")
