"""Faults and churn on a real multi-node Ray (``ray.cluster_utils.Cluster``: a 0-CPU head, 2 one-CPU
worker nodes, one sampler actor each): a node hard-killed while shards are in flight, a shard whose
commit fails on every attempt, and a node that joins mid-run. Nothing is mocked: the node is removed
with its processes killed, the failing commit is a real filesystem error (a directory sitting where
that shard's zarr file must go), reached through the real CLI, and the joined node is a new raylet.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster
from typer.testing import CliRunner

from factory.cli import app
from factory.pipeline import plan as planning
from factory.pipeline.driver import POLL_S, generate, ready_refs
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Location, Store, sample_checksum
from factory.store.lease import Lease
from factory.structures import StructureConfig

N, SHARD = 16, 2


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": tmp,
                                                      "_system_config": fast_failure_detection})
    for _ in range(2):
        c.add_node(num_cpus=1, temp_dir=tmp)
    ray.init(address=c.address, configure_logging=False, log_to_driver=False)
    yield c, tmp
    ray.shutdown()
    c.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def config(tiny_model, out) -> GenerateConfig:
    source = StructureConfig(model=str(tiny_model), sampler={"kind": "dpmpp", "steps": 6, "eta": 0.0})
    return GenerateConfig(n=N, out=out, structure=source, batch_size=2, shard_size=SHARD, seed=11)


@pytest.fixture(scope="module")
def reference(cluster, tiny_model, tmp_path_factory):
    """An uninterrupted run on both nodes."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    result = generate(config(tiny_model, out), ClusterConfig(workers=2))
    assert result.status == "complete" and result.retried == 0
    return Store.open(out)


def assert_every_sample_once_and_verified(store: Store) -> None:
    m = store.manifest(["sample_id", "hr_checksum", "lr_checksum"]).to_pylist()
    assert [r["sample_id"] for r in m] == list(range(store.n))
    for r in m:
        i = r["sample_id"]
        assert sample_checksum(store.hr[i]) == r["hr_checksum"] and sample_checksum(store.lr[i]) == r["lr_checksum"]


@ray.remote(num_cpus=0)
def echo(x, delay_s: float = 0.0):
    time.sleep(delay_s)
    return x


def test_every_ready_ref_is_taken_so_none_starves(cluster):
    """ray.wait(num_returns=1) returns the same one of several ready refs whatever the list order (it goes by
    object id), so the driver takes every ready ref per pass: a loaded actor is never passed over for commits."""
    done = [echo.remote(i) for i in range(8)]
    ray.get(done)
    busy = echo.remote(-1, delay_s=60.0)
    try:
        for refs in (done + [busy], [busy] + done[::-1]):
            assert sorted(ray.get(ready_refs(refs, timeout_s=5.0))) == list(range(8))
        t0 = time.perf_counter()
        assert ready_refs([busy], timeout_s=0.5) == [] and time.perf_counter() - t0 < 5.0
    finally:
        ray.cancel(busy, force=True)
    assert ready_refs([], timeout_s=0.01) == []


def test_a_node_killed_mid_run_loses_no_sample_and_changes_no_byte(cluster, reference, tiny_model, tmp_path):
    cluster, temp_dir = cluster
    removed = []

    def kill_a_node_after_the_first_commit(progress) -> None:
        if progress.done >= SHARD and progress.workers >= 2 and not removed:  # both actors serving: both hold shards
            node = next(iter(cluster.worker_nodes))
            cluster.remove_node(node, allow_graceful=False)  # SIGKILL of its raylet, actor and tasks
            removed.append(node)
            cluster.add_node(num_cpus=1, temp_dir=temp_dir)  # room for the replacement actor

    out = tmp_path / "faulty.zarr"
    result = generate(config(tiny_model, out), ClusterConfig(workers=2), on_progress=kill_a_node_after_the_first_commit)
    assert removed, "the run finished before a node could be removed"
    assert result.status == "complete" and not result.failed_shards
    assert result.retried >= 1, "no shard was in flight on the killed node"
    store = Store.open(out)
    assert store.complete
    assert_every_sample_once_and_verified(store)
    np.testing.assert_array_equal(store.hr[:], reference.hr[:])
    np.testing.assert_array_equal(store.lr[:], reference.lr[:])


def test_a_shard_that_keeps_failing_is_reported_and_nothing_else_is_lost(cluster, reference, tiny_model, tmp_path):
    out = tmp_path / "blocked.zarr"
    spec, card = planning.resolve(config(tiny_model, out))
    loc = Location.parse(out)
    with Lease(loc):
        planning.prepare(loc, spec, card, overwrite=False)
    obstacle = out / "hr" / "0" / "c" / "3" / "0" / "0"  # where zarr must put shard 3 of hr
    obstacle.mkdir(parents=True)
    (obstacle / "in-the-way").write_text("a directory where a file must go: every write of shard 3 fails")
    args = ["generate", "--n", str(N), "--out", str(out), "--model", str(tiny_model), "--steps", "6",
            "--batch-size", "2", "--shard-size", str(SHARD), "--seed", "11", "--workers", "2"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "1 shard(s) failed" in text and "shard ids 3;" in text and "rerun the same command" in text
    assert "hr/0/c/3/0/0" in text  # the sentence names the file the storage refused, not only the store
    store = Store.open(out)
    assert store.attrs["status"] == "planned"
    assert store.committed_shards() == [k for k in range(N // SHARD) if k != 3]
    assert not list((out / "manifest").glob(".part-*"))  # no temp left behind

    shutil.rmtree(obstacle)  # the fault is fixed: the same command completes the store
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    store = Store.open(out)
    assert store.complete
    assert_every_sample_once_and_verified(store)
    np.testing.assert_array_equal(store.hr[:], reference.hr[:])
    assert store.manifest().drop_columns(["created_at", "host", "run_id"]).equals(
        reference.manifest().drop_columns(["created_at", "host", "run_id"]))


def test_a_node_that_joins_mid_run_gets_work_and_changes_no_byte(cluster, reference, tiny_model, tmp_path):
    """The pool is elastic: with --workers unset, an actor starts on a node added while the run goes on,
    and commits shards; the samples the reference run also made are byte-identical to it."""
    cluster, temp_dir = cluster
    added, placed, t0 = [], [], time.perf_counter()

    def add_a_node_once_running(progress) -> None:
        if progress.workers >= 1 and not added:
            added.append((cluster.add_node(num_cpus=1, temp_dir=temp_dir), time.perf_counter() - t0))
        elif added and progress.workers < 3:
            # A fast machine must not finish the run before the joined node's actor has loaded (its start is
            # what is tested). Once the driver has had time to ask for that actor (it resizes every POLL_S), hold
            # it until Ray has placed the actor (the new CPU is taken; commits use none); then let it take
            # one shard every 2 s until the actor serves (its worker process still has to start and load).
            if not placed and time.perf_counter() - t0 - added[0][1] > POLL_S + 1:
                deadline = time.monotonic() + 180
                while ray.available_resources().get("CPU", 0) >= 1 and time.monotonic() < deadline:
                    time.sleep(0.2)
                placed.append(round(time.perf_counter() - t0, 1))
            time.sleep(2.0)

    out = tmp_path / "elastic.zarr"
    cfg = dataclasses.replace(config(tiny_model, out), n=N * 4)
    result = generate(cfg, ClusterConfig(), on_progress=add_a_node_once_running)
    assert added and result.status == "complete"
    node, joined_s = added[0]
    assert result.shards_by_node[node.node_id] >= 1, (f"joined at {joined_s:.1f} s, its actor placed at {placed} s, run "
                                                      f"took {result.wall_s:.1f} s, workers {result.workers}",
                                                      dict(result.shards_by_node), node.node_id,
                                                      [(n["NodeID"][:8], n["Alive"], n["Resources"].get("CPU")) for n in ray.nodes()])
    print(f"node joined at {joined_s:.1f} s, its actor placed at {placed} s, first commit from it at {result.first_commit_s[node.node_id]:.1f} s "
          f"(+{result.first_commit_s[node.node_id] - joined_s:.1f} s); shards per node {dict(result.shards_by_node)}")
    store = Store.open(out)
    assert_every_sample_once_and_verified(store)
    assert store.manifest(["sample_id"]).num_rows == N * 4
    np.testing.assert_array_equal(store.hr[:N], reference.hr[:])  # bytes depend on the seed and id, not on n or node
    np.testing.assert_array_equal(store.lr[:N], reference.lr[:])
