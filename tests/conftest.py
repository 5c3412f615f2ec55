"""Shared fixtures: one tiny trained checkpoint per session, one local Ray per module."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
STORM_TIF = SHARED / "data" / "cos7-tubulin-storm" / "cell1_storm.tif"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 'tiny'-preset checkpoint (16x16, T=50) trained for a few steps on synthetic filaments."""
    from factory.diffusion.train import TrainConfig, train
    from factory import images

    d = tmp_path_factory.mktemp("tiny_model")
    rng = np.random.default_rng(0)
    img = np.zeros((96, 96), np.float32)
    for _ in range(12):  # random straight lines as stand-in filaments
        y0, x0, ang = rng.uniform(0, 96), rng.uniform(0, 96), rng.uniform(0, np.pi)
        for s in np.linspace(-60, 60, 400):
            y, x = int(y0 + s * np.sin(ang)), int(x0 + s * np.cos(ang))
            if 0 <= y < 96 and 0 <= x < 96:
                img[y, x] = 200
    images.write_tiff(d / "train.tif", img, pixel_nm=20.0)
    cfg = TrainConfig(data=[str(d / "train.tif")], out=str(d / "tiny.safetensors"), preset="tiny", steps=20,
                      batch_size=4, num_timesteps=50, checkpoint_every=20, seed=0)
    return train(cfg)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray (2 CPUs) shared by one test module, in its own temp dir."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))}})
    yield ray
    ray.shutdown()
