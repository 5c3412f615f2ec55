"""Shared fixtures: one tiny trained checkpoint per session, one local Ray per module."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny models run fastest on one thread, and Ray workers share the same two cores.
torch.set_num_threads(1)

# Ray keeps its session files and the "current cluster" address file under $RAY_TMPDIR/ray
# (default /tmp/ray, which may not exist, and which any other Ray on the host shares). Every
# test session gets its own short root (Ray's socket paths must fit in 107 bytes), so that
# `ray.cluster_utils.Cluster` can write its address file and `--address auto` never finds a
# Ray that this session did not start.
_RAY_ROOT = tempfile.mkdtemp(prefix="rt", dir="/tmp")
os.makedirs(os.path.join(_RAY_ROOT, "ray"), exist_ok=True)
os.environ["RAY_TMPDIR"] = _RAY_ROOT

ROOT = Path(__file__).resolve().parents[1]
STORM_TIF = ROOT / "data" / "cos7-tubulin-storm" / "cell1_storm.tif"  # shipped in the repository (CC-BY-4.0)
STORE_V1 = ROOT / "tests" / "data" / "store_v1"  # a layout-1 store made by factory before the store package


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


@pytest.fixture(scope="session")
def small_store(tiny_model, tmp_path_factory) -> Path:
    """One complete store per session, made by the real driver (``generate``) on a real local Ray:
    n=22 in shards of 4 (6 shards, the last holds 2), HR 32x32 px at 20 nm, LR 8x8 px at 80 nm,
    photons log-uniform in [100, 2000], seed 1. Uses the Ray of the current module when one is
    running, else starts one (2 CPUs, own temp dir) and shuts it down after. Treat it as read-only:
    copy it (``shutil.copytree``) before changing it."""
    import json

    import ray

    from factory.pipeline.driver import generate
    from factory.pipeline.spec import ClusterConfig, GenerateConfig
    from factory.structures import StructureConfig

    d = tmp_path_factory.mktemp("small_store")
    degradation = d / "degradation.json"
    degradation.write_text(json.dumps({"schema_version": 1, "downsample": 4,
                                       "photons": {"low": 100, "high": 2000, "log": True}}))
    source = StructureConfig(model=str(tiny_model), sampler={"kind": "dpmpp", "steps": 4, "eta": 0.0})
    cfg = GenerateConfig(n=22, out=d / "small.zarr", structure=source, batch_size=4, shard_size=4, seed=1,
                         degradation=degradation, hr_size=32)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"),
                 configure_logging=False)
    try:
        result = generate(cfg, ClusterConfig(workers=2))
    finally:
        if started:
            ray.shutdown()
    assert result.status == "complete", result
    return cfg.out


def build_store(location, hr: np.ndarray, shard_size: int = 4, seed: int = 3, degradation=None,
                hr_pixel_nm: float = 20.0, card: dict | None = None, finalize: bool = True):
    """A complete pairs store holding exactly the HR images ``hr`` (N, S, S) in [0, 1], made without Ray:
    the real pairs stage and the real writer (lease, exclusive commit markers, finalize). Returns the Store."""
    from factory.optics import DegradationConfig
    from factory.pipeline.finalize import finalize as finish
    from factory.pipeline.tasks import pairs_shard
    from factory.store import Location, RunSpec, Store, writer
    from factory.store.lease import Lease

    n, S, _ = hr.shape
    cfg = degradation or DegradationConfig()
    structure = {"kind": "ddpm", "id": "ab" * 32, "model_id": "ab" * 32, "model_path": "/nowhere/tiny.safetensors",
                 "sampler": {"kind": "dpmpp", "steps": 5, "eta": 0.0}, "bf16": False}
    spec = RunSpec(n=n, seed=seed, shard_size=shard_size, batch_size=2, product="pairs", structure=structure, hr_size=S,
                   lr_size=S // cfg.downsample, hr_pixel_nm=hr_pixel_nm, lr_pixel_nm=hr_pixel_nm * cfg.downsample,
                   degradation=cfg.to_dict(), package_version="0.1.0")
    loc = Location.parse(location)
    with Lease(loc) as lease:
        store = writer.create(loc, spec, card or {"preset": "tiny"})
        for k in range(spec.num_shards):
            sl = store.shard_slice(k)
            out = pairs_shard(spec, k, np.ascontiguousarray(hr[sl], np.float32), "cpu", lease.run_id)
            writer.commit_shard(store, k, out.blocks, out.table, lease.run_id)
        if finalize:
            finish(Store.open(loc, writable=True))
    return Store.open(loc)


def uncommit(location, shards) -> None:
    """Make a (copied) complete store what a run killed before committing ``shards`` leaves: status planned,
    no compacted manifest, those shards' commit markers and data gone (the primitives `repair` uses)."""
    from factory.store import Store, writer

    store = Store.open(str(location), writable=True)
    writer.reopen_for_repair(store)
    writer.drop_shards(store, list(shards))


def flip_byte(path, offset: int = 40, mask: int = 0x10) -> None:
    """Flip bits of one byte of a file in place (silent corruption)."""
    from pathlib import Path

    data = bytearray(Path(path).read_bytes())
    data[offset] ^= mask
    Path(path).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def s3():
    """A real S3 API on 127.0.0.1 (moto in server mode, started and stopped here) with a bucket "factory";
    the standard AWS variables point every client at it (this process, its Ray workers and subprocesses).
    Returns the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_ENDPOINT_URL=endpoint,
                      AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    import boto3  # an independent S3 client (moto's own dependency) for the bucket

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="factory")
    try:
        yield endpoint
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
SPOTS_GEOMETRY = dict(lr_pixel_nm=100.0, hr_pixel_nm=25.0, kde_sigma_nm=25.0, psf_sigma_nm=110.0)  # upscale 4, KDE sigma 1 HR px


@pytest.fixture(scope="session")
def tiny_sr3(tmp_path_factory) -> Path:
    """A 'tiny'-preset conditional (SR3-style) checkpoint trained for 6 steps on 8x8 px frames of Gaussian spots
    (100 nm camera pixels -> 32x32 HR at 25 nm), with a 4-candidate schedule search on 4 held-out frames."""
    from factory.diffusion.schedule_search import SearchConfig
    from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry
    from factory.diffusion.train_smlm import SmlmTrainConfig, train_smlm

    geometry = SmlmGeometry(**SPOTS_GEOMETRY)
    cfg = SmlmTrainConfig(out=str(tmp_path_factory.mktemp("tiny_sr3") / "sr3.safetensors"), preset="tiny", steps=6,
                          batch_size=4, checkpoint_every=3, seed=0,
                          search=SearchConfig(steps=(4, 8), final_gammas=(1e-2, 1e-3), frames=4))
    return train_smlm(cfg, GaussianSpots(32, 0, geometry), GaussianSpots(4, 1, geometry))
