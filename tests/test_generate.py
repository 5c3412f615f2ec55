"""``factory generate`` end to end on a real local Ray with the tiny model: store contents,
rerun semantics, config mismatch, bad input, determinism across workers / n / shard size /
batch size, and a ``kill -9`` of a real ``factory generate`` process followed by a resume.

Runs (one shared Ray, the ``ray_local`` fixture; the CLI's own local Ray only in the kill test):
    R1  n=6,  shard 4, batch 2, 2 workers      the reference store
    R2  n=24, shard 2, batch 2, 1 worker       samples 0..5 must equal R1's bit for bit
    K   R2's config through the CLI, killed after its first commit, resumed: must equal R2
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Store, sample_checksum

SAMPLER = {"kind": "dpmpp", "steps": 6, "eta": 0.0}
TIMING = ["created_at", "host"]  # the only manifest columns allowed to differ between equal runs


def config(tiny_model, out, **changes) -> GenerateConfig:
    base = GenerateConfig(n=6, out=out, model=str(tiny_model), sampler=SAMPLER, batch_size=2, shard_size=4, seed=7)
    return dataclasses.replace(base, **changes)


def cli_args(tiny_model, out, n=6, shard_size=4, extra=()) -> list[str]:
    return ["generate", "--n", str(n), "--out", str(out), "--model", str(tiny_model), "--steps", str(SAMPLER["steps"]),
            "--batch-size", "2", "--shard-size", str(shard_size), "--seed", "7", *extra]


def manifest_rows(store: Store, drop=TIMING):
    return store.manifest().drop_columns(drop).to_pylist()


@pytest.fixture(scope="module")
def r1(ray_local, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("r1") / "r1.zarr"
    return out, generate(config(tiny_model, out), ClusterConfig(workers=2))


@pytest.fixture(scope="module")
def r2(ray_local, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("r2") / "r2.zarr"
    return out, generate(config(tiny_model, out, n=24, shard_size=2), ClusterConfig(workers=1))


def test_generate_writes_a_complete_verifiable_store(r1):
    out, result = r1
    assert result.status == "complete" and result.generated == 6 and not result.failed_shards
    store = Store.open(out)
    assert store.complete and store.committed_shards() == [0, 1]
    assert store.attrs["totals"]["samples"] == 6 and "6 synthetic LR/HR pairs" in store.attrs["card"]["summary"]
    m = store.manifest()
    assert m.column("sample_id").to_pylist() == list(range(6))
    for row in m.to_pylist():
        i = row["sample_id"]
        assert sample_checksum(store.hr[i]) == row["hr_checksum"] and sample_checksum(store.lr[i]) == row["lr_checksum"]
    hr = store.hr[:]  # (6, 16, 16)
    assert hr.min() >= 0 and hr.max() <= 1 and len({sample_checksum(h) for h in hr}) == 6
    assert duckdb.sql(f"SELECT count(*), min(steps), max(steps) FROM '{store.manifest_glob}'").fetchall() == [(6, 6, 6)]


def test_samples_do_not_depend_on_workers_n_or_shard_size(r1, r2):
    """R2 differs from R1 in workers (1 vs 2), n (24 vs 6) and shard size (2 vs 4), not in batches."""
    a, b = Store.open(r1[0]), Store.open(r2[0])
    assert b.complete and b.manifest().num_rows == 24
    np.testing.assert_array_equal(b.hr[:6], a.hr[:])  # bit for bit
    np.testing.assert_array_equal(b.lr[:6], a.lr[:])
    assert manifest_rows(b, TIMING + ["shard"])[:6] == manifest_rows(a, TIMING + ["shard"])


def test_rerun_of_a_complete_store_does_nothing_and_says_so(r1, tiny_model):
    out = r1[0]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, cli_args(tiny_model, out))
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and "nothing to do" in result.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_crash_between_last_commit_and_finalize_is_finished_by_a_rerun(r1, tiny_model, tmp_path):
    out = tmp_path / "unfinished.zarr"
    shutil.copytree(r1[0], out)
    Store.open(out, writable=True).set_attrs(status="planned", totals=None, card=None)
    result = generate(config(tiny_model, out))
    assert result.status == "complete" and result.generated == 0 and result.skipped == 6
    store = Store.open(out)
    assert store.complete and store.attrs["totals"]["samples"] == 6
    np.testing.assert_array_equal(store.hr[:], Store.open(r1[0]).hr[:])


def test_a_different_config_is_refused_naming_the_fields(r1, tiny_model):
    out = r1[0]
    args = cli_args(tiny_model, out, n=8)
    args[args.index("--seed") + 1] = "8"
    args[args.index("--steps") + 1] = "5"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "different config (n, seed, sampler.steps differ)" in text and "--overwrite" in text
    assert "Traceback" not in result.output and Store.open(out).spec.seed == 7


def test_overwrite_with_another_batch_size_replaces_the_store_and_hr_agrees(r1, ray_local, tiny_model, tmp_path):
    """--overwrite replaces a store made with other settings; across batch sizes HR agrees up to
    floating-point batching effects (the largest difference is printed)."""
    out = tmp_path / "b3.zarr"
    shutil.copytree(r1[0], out)
    result = CliRunner().invoke(app, cli_args(tiny_model, out, extra=["--batch-size", "3", "--overwrite"]))
    assert result.exit_code == 0, result.output
    store = Store.open(out)
    assert store.complete and store.spec.batch_size == 3 and store.committed_shards() == [0, 1]
    diff = float(np.abs(store.hr[:] - Store.open(r1[0]).hr[:]).max())
    print(f"max |HR(batch 2) - HR(batch 3)| = {diff:.3g}")
    assert diff <= 1e-4


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/m.safetensors"], "no such checkpoint file"),
    (["--hr-size", "10"], "multiple of"),
    (["--sampler", "dpmpp", "--eta", "0.5"], "only applies to the ddim sampler"),
    (["--address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
])
def test_bad_input_is_one_sentence_before_any_work(tiny_model, tmp_path, args, message):
    base = cli_args(tiny_model, tmp_path / "x.zarr")
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "x.zarr").exists()


def test_refuses_a_folder_that_is_not_a_store(tiny_model, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.tif").write_bytes(b"x")
    result = CliRunner().invoke(app, cli_args(tiny_model, tmp_path / "data", extra=["--overwrite"]))
    assert result.exit_code == 2 and "not a factory store" in result.output
    assert (tmp_path / "data" / "precious.tif").exists()


def _tree(pid: int) -> set[int]:
    """pid and all its descendants (from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = {pid}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # gone (or a zombie being reaped)


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state held by these processes."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                words = [bytes.fromhex(w)[::-1] for w in textwrap.wrap(cols[1].split(":")[0], 8)]  # host-order 32-bit words
                ip = ipaddress.ip_address(b"".join(words))
                found.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


def test_kill_9_of_the_cli_then_rerun_equals_an_uninterrupted_run(r2, ray_local, tiny_model, tmp_path):
    """A real ``factory generate`` process (its own local Ray) is SIGKILLed right after its first
    commit; rerunning the same config completes the store with R2's bytes. While it runs, every
    socket its Ray listens on is bound to 127.0.0.1."""
    out = tmp_path / "k.zarr"
    argv = [str(Path(sys.executable).parent / "factory"), *cli_args(tiny_model, out, n=24, shard_size=2, extra=["--workers", "1"])]
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "RAY_TMPDIR": ray_tmp})
    part0 = out / "manifest"
    deadline = time.monotonic() + 240
    while not (part0.is_dir() and any(p.name.startswith("part-") for p in part0.iterdir())):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no shard committed within 240 s"
        time.sleep(0.02)
    tree = _tree(proc.pid)
    addresses = _listening_addresses(tree)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    # GCS and raylet die with their driver, then the Ray workers (the only processes that run
    # factory code): nothing may keep writing. Ray's helpers (log monitor, dashboard and
    # runtime-env agents) poll for the raylet and exit up to ~1 min later; they never write.
    deadline, writers = time.monotonic() + 20, [0]
    while writers and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = {p: _comm(p) for p in tree - {proc.pid} if Path(f"/proc/{p}").exists()}
        writers = [p for p, comm in alive.items() if comm in ("raylet", "gcs_server")
                   or (comm.startswith("ray::") and not comm.startswith(("ray::DashboardA", "ray::RuntimeEnv")))]
    for p in alive:  # these processes were started by our subprocess: end them by id, never leak them
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not writers, f"Ray processes outlived the killed driver: {[alive[p] for p in writers]}"
    committed = len(Store.open(out).committed_shards())  # a commit in flight at the kill may have landed
    assert Store.open(out).attrs["status"] == "planned" and 1 <= committed < 12

    resumed = generate(config(tiny_model, out, n=24, shard_size=2), ClusterConfig(workers=2))
    assert resumed.status == "complete" and resumed.skipped == 2 * committed
    a, b = Store.open(r2[0]), Store.open(out)
    np.testing.assert_array_equal(b.hr[:], a.hr[:])
    np.testing.assert_array_equal(b.lr[:], a.lr[:])
    assert manifest_rows(b) == manifest_rows(a)
    assert pc.all(pc.equal(b.manifest(["sample_id"]).column(0), a.manifest(["sample_id"]).column(0))).as_py()


def test_a_deterministic_failure_does_not_say_rerun_to_retry(ray_local, tmp_path):
    """A model whose finite weights overflow to NaN fails the same way every time: the sentence says so."""
    import torch

    from factory.diffusion import checkpoint
    from factory.diffusion.checkpoint import ModelConfig
    from factory.diffusion.schedule import ScheduleConfig
    from factory.diffusion.unet import PRESETS, UNet

    net = UNet(PRESETS["tiny"])
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e30)  # finite, so the checkpoint loads; the activations overflow to inf and NaN
    model = tmp_path / "overflow.safetensors"
    checkpoint.save(model, net, ModelConfig(PRESETS["tiny"], ScheduleConfig(num_timesteps=50), 20.0))
    result = generate(GenerateConfig(n=2, out=tmp_path / "o.zarr", model=str(model), sampler=SAMPLER, batch_size=2,
                                     shard_size=2, seed=0, hr_size=16), ClusterConfig(workers=1))
    assert result.status == "incomplete" and list(result.failed_shards) == [0]
    sentence = result.failure_sentence()
    assert "non-finite images" in sentence and "deterministic" in sentence and "retry" not in sentence
