"""factory.care and `factory care`: one normalization for train and apply, resumable training, tiled apply,
bioimage.io export; on the real session store (small_store: HR 32 px at 20 nm, LR 8 px at 80 nm)."""
from __future__ import annotations

import json
import socket
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from factory import images
from factory.care import checkpoint
from factory.care.apply import ApplyConfig, prepare, restore
from factory.care.network import NetworkConfig, build, receptive_radius
from factory.care.train import CareTrainConfig, state_path, train
from factory.care.transform import InputNorm, InputTransform, model_input
from factory.cli import app
from factory.data import DataConfig, Normalization, PairDataset, Upsample
from factory.normalize import CAMERA_FIELDS
from factory.store import Store

runner = CliRunner()
TINY = NetworkConfig(depth=2, channels=4)


def _cfg(store, out, **kw) -> CareTrainConfig:
    base = dict(store=str(store), out=str(out), steps=6, batch_size=4, network=TINY, val_every=3, checkpoint_every=2,
                shuffle_buffer=8, threads=1, log_every_s=0.0)
    return CareTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model_path(small_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("care") / "care.safetensors"
    train(_cfg(small_store, out, steps=8), log=lambda _: None)
    return out


def test_receptive_radius_bounds_the_gradient_support():
    torch.manual_seed(0)
    for depth in (1, 2, 3):
        cfg = NetworkConfig(depth, 16)
        net, side = build(cfg).double(), 192
        x = torch.rand(1, 1, side, side, dtype=torch.float64, requires_grad=True)
        net(x)[0, 0, side // 2, side // 2].backward()
        ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)
        support = int(max((ys - side // 2).abs().max(), (xs - side // 2).abs().max()))
        assert support <= receptive_radius(cfg) <= support + 2 * cfg.multiple  # a tight upper bound


@pytest.mark.parametrize("norm", list(InputNorm))
def test_apply_reproduces_the_training_normalization(small_store, model_path, norm):
    store = Store.open(small_store)
    cam = store.manifest(["sample_id", *CAMERA_FIELDS]).to_pydict()
    model = checkpoint.load(model_path)
    model.transform = InputTransform(norm, 4, scale_e=123.0)
    batch = next(iter(PairDataset(DataConfig(small_store, shards=(5,), shuffle=False, fields=CAMERA_FIELDS))))
    i = int(batch[2]["sample_id"])
    camera = {k: np.asarray([batch[2][k]]) for k in CAMERA_FIELDS}
    trained = model_input(batch[0].numpy(), model.transform, camera)  # what the training loop feeds the network
    user_camera = {k: cam[k][i] for k in CAMERA_FIELDS}
    applied = prepare(store.lr[i].astype(np.float64), 80.0, model, user_camera)  # what `care apply` feeds it
    torch.testing.assert_close(applied, trained, rtol=0, atol=0)
    # and an independent path: factory.data's own normalization and bilinear upsampling
    ref = PairDataset(DataConfig(small_store, shards=(5,), shuffle=False, upsample=Upsample.bilinear,
                                 normalize=Normalization.percentile if norm is InputNorm.percentile else Normalization.camera))
    expected = next(iter(ref))[0][None] / (1.0 if norm is InputNorm.percentile else 123.0)
    torch.testing.assert_close(applied, expected, rtol=1e-6, atol=1e-6)


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resumed_training_is_bit_identical(small_store, tmp_path):
    a = train(_cfg(small_store, tmp_path / "a.safetensors"), log=lambda _: None)
    first = train(_cfg(small_store, tmp_path / "b.safetensors"), log=lambda _: None, stop_after=3)
    assert not first.finished and first.step == 3 and state_path(tmp_path / "b.safetensors").exists()
    b = train(_cfg(small_store, tmp_path / "b.safetensors"), log=lambda _: None)  # resumes at step 3, mid-epoch
    assert b.resumed_from == 3 and b.step == a.step == 6 and b.finished
    wa, wb = _weights(a.checkpoint), _weights(b.checkpoint)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics == b.metrics and a.metrics["psnr_db"] > 0 and "frc_nm" in a.metrics
    again = train(_cfg(small_store, tmp_path / "b.safetensors"), log=lambda _: None)  # complete: nothing to do
    assert again.step == 6 and again.resumed_from == 6


def test_resume_refuses_other_settings(small_store, tmp_path):
    from factory.errors import FactoryError

    train(_cfg(small_store, tmp_path / "c.safetensors"), log=lambda _: None, stop_after=1)
    with pytest.raises(FactoryError, match="lr differ"):
        train(_cfg(small_store, tmp_path / "c.safetensors", lr=1e-3), log=lambda _: None)


def test_cli_train_bad_input_is_one_sentence(small_store, tiny_model, tmp_path):
    cases = [(["--store", str(tmp_path / "missing.zarr")], "missing.zarr"),
             (["--store", str(small_store), "--where", "photons < 0"], "no training pairs"),
             (["--store", str(small_store), "--val-shards", "6"], "must leave at least one"),
             (["--store", str(small_store), "--depth", "6"], "not divisible by 2**depth"),
             (["--store", str(small_store), "--normalize", "minmax"], "percentile or camera")]
    for args, message in cases:
        r = runner.invoke(app, ["care", "train", *args, "--out", str(tmp_path / "m.safetensors"), "--steps", "1"])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
        assert not (tmp_path / "m.safetensors").exists()


def test_cli_train_writes_a_factory_care_checkpoint(small_store, tmp_path):
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["care", "train", "--store", str(small_store), "--out", str(out), "--steps", "4", "--batch-size", "4",
                            "--depth", "2", "--channels", "4", "--val-every", "2", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "held-out PSNR" in r.output and "step 4/4" in r.output  # plain progress lines, also in a log file
    model = checkpoint.load(out)
    assert (model.hr_pixel_nm, model.lr_pixel_nm, model.transform.downsample) == (20.0, 80.0, 4)
    assert model.transform.norm is InputNorm.percentile and model.training["steps_done"] == 4
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "factory-care" and json.loads(meta["pixels"])["hr_pixel_nm"] == 20.0


def test_non_finite_loss_stops_with_one_sentence(small_store, tmp_path):
    r = runner.invoke(app, ["care", "train", "--store", str(small_store), "--out", str(tmp_path / "x.safetensors"), "--steps", "20",
                            "--batch-size", "4", "--channels", "4", "--lr", "1e30", "--threads", "1"])
    assert r.exit_code == 2 and "the loss became" in r.output and "Traceback" not in r.output


def _field(n_lr: int, seed: int = 0) -> np.ndarray:
    """A widefield-like frame (n_lr, n_lr) ADU at 80 nm from the real optical model."""
    from factory.optics import DegradationParams, degrade
    from factory.simulate import SimulationConfig, simulate_image

    hr = simulate_image(SimulationConfig(size_px=4 * n_lr, pixel_nm=20.0), np.random.default_rng(seed))
    return degrade(hr, 20.0, DegradationParams(photons=800.0), np.random.default_rng(seed)).astype(np.float64)


def test_tiled_apply_equals_whole_field_when_the_overlap_covers_the_receptive_field(model_path):
    model = checkpoint.load(model_path)
    frame = _field(40)
    whole = restore(frame, 80.0, model, ApplyConfig(tile=None))
    assert whole.shape == (160, 160)
    radius = receptive_radius(model.network)  # 26 px: tiles are used >= overlap / 4 from their cut edges
    exact = restore(frame, 80.0, model, ApplyConfig(tile=128, overlap=4 * 28))
    np.testing.assert_allclose(exact, whole, atol=1e-5 * np.abs(whole).max())
    assert 4 * 28 // 4 >= radius
    short = restore(frame, 80.0, model, ApplyConfig(tile=64, overlap=32))  # the cut edges' zero padding reaches in
    gap = np.abs(short - whole) / np.abs(whole).max()
    assert gap.max() < 0.05 and gap.mean() < 0.005  # the stated tolerance for overlaps under 4 x radius


def test_cli_apply_resamples_and_writes_the_hr_pixel_size(model_path, tmp_path):
    images.write_tiff(tmp_path / "wf.tif", _field(24).astype(np.uint16), pixel_nm=80.0)
    images.write_tiff(tmp_path / "wf100.tif", _field(24).astype(np.uint16), pixel_nm=100.0)
    r = runner.invoke(app, ["care", "apply", str(tmp_path / "wf.tif"), "--model", str(model_path), "--out", str(tmp_path / "r.tif")])
    assert r.exit_code == 0, r.output
    out = images.read_stack(tmp_path / "r.tif")
    assert out.data.shape == (1, 96, 96) and out.data.dtype == np.float32 and out.pixel_nm == pytest.approx(20.0)
    r = runner.invoke(app, ["care", "apply", str(tmp_path / "wf100.tif"), "--model", str(model_path), "--out", str(tmp_path / "r2.tif"),
                            "--whole"])
    assert r.exit_code == 0, r.output
    assert images.read_stack(tmp_path / "r2.tif").data.shape == (1, 120, 120)  # 24 px x 100 nm = 30 LR px of 80 nm


def test_cli_apply_bad_input_is_one_sentence(model_path, tiny_model, tmp_path):
    images.write_tiff(tmp_path / "stack.tif", np.zeros((3, 16, 16), np.uint16), pixel_nm=80.0)
    images.write_tiff(tmp_path / "coarse.tif", np.zeros((16, 16), np.uint16), pixel_nm=500.0)
    images.write_tiff(tmp_path / "nopix.tif", np.zeros((16, 16), np.uint16), pixel_nm=None)
    cases = [(["missing.tif", "--model", str(model_path)], "no such file"),
             (["stack.tif", "--model", str(model_path)], "3-D stack"),
             (["coarse.tif", "--model", str(model_path)], "trained on"),
             (["nopix.tif", "--model", str(model_path)], "--pixel-nm"),
             (["coarse.tif", "--model", str(tiny_model)], "not a CARE model"),
             (["coarse.tif", "--model", str(tmp_path / "stack.tif")], "not a readable safetensors model")]
    for args, message in cases:
        args = [str(tmp_path / args[0]), *args[1:], "--out", str(tmp_path / "o.tif")]
        r = runner.invoke(app, ["care", "apply", *args])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
        assert not (tmp_path / "o.tif").exists()


def test_camera_model_needs_the_camera(small_store, tmp_path):
    out = tmp_path / "cam.safetensors"
    train(_cfg(small_store, out, steps=2, norm="camera"), log=lambda _: None)
    model = checkpoint.load(out)
    assert model.transform.norm is InputNorm.camera and model.transform.scale_e > 1
    images.write_tiff(tmp_path / "wf.tif", _field(8).astype(np.uint16), pixel_nm=80.0)
    r = runner.invoke(app, ["care", "apply", str(tmp_path / "wf.tif"), "--model", str(out), "--out", str(tmp_path / "o.tif")])
    assert r.exit_code == 2 and "camera normalization" in r.output
    r = runner.invoke(app, ["care", "apply", str(tmp_path / "wf.tif"), "--model", str(out), "--out", str(tmp_path / "o.tif"),
                            "--offset-adu", "100", "--gain-e-per-adu", "0.5"])
    assert r.exit_code == 0, r.output


def test_bioimageio_package_validates_offline_and_its_weights_reproduce_the_test_output(model_path, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during bioimage.io export or validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)  # no download may happen
    monkeypatch.setattr(socket, "create_connection", refuse)
    out = tmp_path / "care.zip"
    r = runner.invoke(app, ["care", "export-bioimageio", "--model", str(model_path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    from bioimageio.spec import load_model_description

    descr = load_model_description(out, perform_io_checks=True)
    assert descr.validation_summary.status in ("passed", "valid-format"), descr.validation_summary.format()
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert {"rdf.yaml", "weights.pt", "test_input.npy", "test_output.npy"} <= names
        z.extractall(tmp_path / "pkg")
    x = np.load(tmp_path / "pkg" / "test_input.npy")  # (1, 1, h, w) ADU
    lo, hi = np.percentile(x, (1.0, 99.8), axis=(2, 3), keepdims=True)  # the package's scale_range, computed here
    net = torch.jit.load(str(tmp_path / "pkg" / "weights.pt"))
    y = net(torch.from_numpy(((x - lo) / (hi - lo + 1e-6)).astype(np.float32))).detach().numpy()
    np.testing.assert_allclose(y, np.load(tmp_path / "pkg" / "test_output.npy"), atol=1e-4)


def test_ray_train_with_two_cpu_workers_splits_the_shards_and_writes_one_model(ray_local, small_store, tmp_path):
    """Ray Train's TorchTrainer, 2 CPU workers (DDP over gloo): each rank streams its own whole shards,
    both take the same number of steps, rank 0 writes the model (identical weights on both ranks)."""
    import json

    from factory.care import checkpoint
    from factory.care.ray_train import ray_train
    from factory.care.train import CareTrainConfig

    out = tmp_path / "care.safetensors"
    cfg = CareTrainConfig(store=str(small_store), out=str(out), steps=4, batch_size=2, val_shards=1, val_every=4,
                          checkpoint_every=4, threads=1)
    result = ray_train(cfg, workers=2)
    ranks = [json.loads((tmp_path / f"care.safetensors.rank{r}.json").read_text()) for r in (0, 1)]
    assert result["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    assert all(r["step"] == 4 for r in ranks)  # the same number of optimizer steps on every rank
    a, b = set(ranks[0]["rank_shards"]), set(ranks[1]["rank_shards"])
    assert a and b and not a & b and a | b == {0, 1, 2, 3, 4}  # shard 5 is held out for validation
    model = checkpoint.load(out)
    assert model.training["steps_done"] == 4 and model.net(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
