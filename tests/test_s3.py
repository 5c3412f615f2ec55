"""Stores on object storage: the whole generate -> kill -9 -> resume -> verify -> query -> dataset -> export
cycle on ``s3://`` against a real S3 API (moto in server mode on 127.0.0.1), equal byte for byte to the
same run on a local folder; one writer per store (the lease is a conditional PUT); repair of a damaged
object. No shared filesystem: the model reaches the Ray workers through the object store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import flip_byte
from factory.cli import app
from factory.data import DataConfig, PairDataset
from factory.errors import FactoryError
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Store
from factory.store.lease import Lease
from factory.structures import StructureConfig

runner = CliRunner()
SAMPLER = {"kind": "ddim", "steps": 3, "eta": 0.0}


def run(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def ray_s3(s3):
    """A local Ray started after the AWS variables point at moto, so its workers inherit them."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    root = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": root, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}})
    yield s3
    ray.shutdown()


def config(tiny_model, out, **changes) -> GenerateConfig:
    base = dict(n=8, out=out, structure=StructureConfig(model=str(tiny_model), sampler=SAMPLER), batch_size=2,
                shard_size=2, seed=6, hr_size=16)
    return GenerateConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def local_reference(ray_s3, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert generate(config(tiny_model, out), ClusterConfig(workers=2)).status == "complete"
    return Store.open(out)


def s3():
    """An independent S3 client (boto3) to look at and damage objects behind factory's back."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def keys(prefix: str) -> list[str]:
    return [o["Key"] for o in s3().list_objects_v2(Bucket="factory", Prefix=prefix).get("Contents", [])]


def test_the_whole_cycle_on_s3_equals_the_local_run(ray_s3, tiny_model, local_reference, tmp_path):
    url = "s3://factory/cycle.zarr"
    argv = [str(Path(sys.executable).parent / "factory"), "generate", "--n", "8", "--out", url, "--model", str(tiny_model),
            "--sampler", "ddim", "--steps", "3", "--batch-size", "2", "--shard-size", "2", "--seed", "6", "--hr-size", "16",
            "--workers", "1"]
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**env, "RAY_TMPDIR": ray_tmp})
    deadline = time.monotonic() + 240
    while not keys("cycle.zarr/manifest/part-"):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no shard committed within 240 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the driver; its Ray dies with it
    proc.wait()
    time.sleep(1.0)
    store = Store.open(url)
    assert store.attrs["status"] == "planned" and 1 <= len(store.committed_shards()) < 4

    resumed = generate(config(tiny_model, url), ClusterConfig(workers=2))  # the dead writer's lease is taken over
    assert resumed.status == "complete" and resumed.skipped >= 2
    store = Store.open(url)
    assert store.complete and keys("cycle.zarr/manifest.parquet") == ["cycle.zarr/manifest.parquet"]
    for name in ("hr", "lr"):
        for k in range(4):
            np.testing.assert_array_equal(store.read_shard(name, k), local_reference.read_shard(name, k))
    assert store.reader.backend == "tensorstore"
    assert "ray" not in "".join(keys("cycle.zarr/"))  # nothing but the store's own objects

    r = run("verify", url)
    assert r.exit_code == 0 and r.stdout.startswith("OK: 8 samples in 4 committed shards"), r.output
    r = run("query", url, "SELECT count(*) AS n, max(photons) AS p FROM manifest WHERE shard < 2", "--format", "csv")
    want = local_reference.manifest(["shard", "photons"]).to_pydict()
    assert r.exit_code == 0 and r.stdout.splitlines()[1].startswith("4,")
    ids = sorted(f["sample_id"] for _, _, f in PairDataset(DataConfig(url, fields=("sample_id",), where="shard >= 1")))
    assert ids == list(range(2, 8)) and len(want["shard"]) == 8
    r = run("export", url, "--format", "tiff", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "t" / "hr.tif"),
                                  np.concatenate([local_reference.read_shard("hr", k) for k in range(4)]))
    r = run("info", url, "--json")
    assert r.exit_code == 0 and '"location": "s3://factory/cycle.zarr"' in r.stdout


def test_one_writer_per_s3_store_and_a_damaged_object_is_refused_then_repaired(ray_s3, tiny_model, tmp_path):
    url = "s3://factory/lease.zarr"
    assert generate(config(tiny_model, url, n=4), ClusterConfig(workers=1)).status == "complete"
    holder = Lease(Store.open(url).loc, ttl_s=60).acquire()  # another live run holds the store
    r = run("generate", "--n", "4", "--out", url, "--model", str(tiny_model), "--sampler", "ddim", "--steps", "3",
            "--batch-size", "2", "--shard-size", "2", "--seed", "6", "--hr-size", "16", "--overwrite")
    assert r.exit_code == 2 and "is being written by another factory run" in r.output
    holder.release()

    local = tmp_path / "obj"
    key = "lease.zarr/hr/0/c/1/0/0"
    local.write_bytes(s3().get_object(Bucket="factory", Key=key)["Body"].read())
    flip_byte(local, 40)
    s3().put_object(Bucket="factory", Key=key, Body=local.read_bytes())
    with pytest.raises(FactoryError, match=r"lease\.zarr: shard 1: .*factory repair"):
        list(PairDataset(DataConfig(url)))
    r = run("verify", url)
    assert r.exit_code == 1 and "DAMAGED" in r.output
    r = run("repair", url)
    assert r.exit_code == 0, r.output
    assert run("verify", url).exit_code == 0
    assert len(list(PairDataset(DataConfig(url)))) == 4
