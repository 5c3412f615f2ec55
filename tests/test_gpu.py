"""The GPU paths, on a real CUDA GPU: sampling (fp32 and bf16 autocast), a DDPM training step, ``generate``
with a GPU actor on a real local Ray, and the conditional model's ``restore``. Marked ``gpu``: deselected
by the default test run (CPU machines and CI have no GPU; pyproject ``-m "not gpu"``) and run by
``benchmarks/gpu_check.sh`` on a machine with one (``pytest -m gpu``)."""
from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda():
    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU (run them with pytest -m gpu on one)"


def test_sampling_on_the_gpu_matches_the_cpu_and_bf16_stays_close(tiny_model):
    from factory.diffusion import checkpoint
    from factory.diffusion.sampling import SamplerConfig, sample_images

    cfg = SamplerConfig(kind="dpmpp", steps=10)
    cpu = sample_images(checkpoint.load(tiny_model), range(8), 0, cfg, size=32, device="cpu")
    gpu = sample_images(checkpoint.load(tiny_model, device="cuda"), range(8), 0, cfg, size=32, device="cuda")
    bf16 = sample_images(checkpoint.load(tiny_model, device="cuda"), range(8), 0, cfg, size=32, device="cuda", bf16=True)
    assert np.abs(gpu - cpu).max() < 1e-3  # another device's kernels round differently, nothing more
    assert 0 < np.abs(bf16 - gpu).max() < 0.1 and np.isfinite(bf16).all()


def test_a_training_step_on_the_gpu_lowers_the_loss(tmp_path):
    from factory import images
    from factory.diffusion.train import TrainConfig, train

    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[rng.integers(0, 64, 20), :] = 1.0
    images.write_tiff(tmp_path / "t.tif", img, pixel_nm=20.0)
    out = train(TrainConfig(data=[str(tmp_path / "t.tif")], out=str(tmp_path / "m.safetensors"), preset="tiny", steps=30,
                            batch_size=8, num_timesteps=50, checkpoint_every=30, device="cuda", bf16=True))
    from factory.diffusion import checkpoint

    ckpt = checkpoint.load(out)
    assert ckpt.card["device"].startswith("cuda") and all(torch.isfinite(p).all() for p in ckpt.model.parameters())


def test_generate_gives_the_actor_a_gpu(tiny_model, tmp_path):
    import ray

    from factory.pipeline.driver import generate
    from factory.pipeline.spec import ClusterConfig, GenerateConfig
    from factory.store import Store
    from factory.structures import StructureConfig

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, configure_logging=False,
                 _temp_dir=tempfile.mkdtemp(prefix="rg", dir="/tmp"))
    try:
        cfg = GenerateConfig(n=16, out=tmp_path / "g.zarr", batch_size=8, shard_size=8, hr_size=32,
                             structure=StructureConfig(model=str(tiny_model), sampler={"kind": "dpmpp", "steps": 10, "eta": 0.0}))
        result = generate(cfg, ClusterConfig())
    finally:
        if started:
            ray.shutdown()
    assert result.status == "complete" and result.workers == 1
    assert set(Store.open(tmp_path / "g.zarr").manifest(["device"]).column("device").to_pylist()) == {"cuda"}


def test_restore_runs_on_the_gpu(tiny_sr3, tmp_path):
    from factory import images
    from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry
    from conftest import SPOTS_GEOMETRY
    from typer.testing import CliRunner

    from factory.cli import app

    frames = np.stack([GaussianSpots(3, 5, SmlmGeometry(**SPOTS_GEOMETRY))[i].frame_e * 2 + 100 for i in range(3)])
    images.write_tiff(tmp_path / "f.tif", frames.astype(np.uint16), pixel_nm=100.0)
    r = CliRunner().invoke(app, ["restore", str(tmp_path / "f.tif"), "--model", str(tiny_sr3), "--samples", "2",
                                 "--out", str(tmp_path / "r.tif"), "--gain-e-per-adu", "0.5", "--device", "cuda"])
    assert r.exit_code == 0, r.output
    assert images.read_stack(tmp_path / "r.tif").data.shape[0] == 3
