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
import re
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
from factory.structures import StructureConfig

SAMPLER = {"kind": "dpmpp", "steps": 6, "eta": 0.0}
TIMING = ["created_at", "host", "run_id"]  # the only manifest columns allowed to differ between equal runs


def config(tiny_model, out, **changes) -> GenerateConfig:
    base = GenerateConfig(n=6, out=out, structure=StructureConfig(model=str(tiny_model), sampler=SAMPLER), batch_size=2,
                          shard_size=4, seed=7)
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
    glob = out / "manifest" / "part-*.parquet"
    assert duckdb.sql(f"SELECT count(*), min(steps), max(steps) FROM '{glob}'").fetchall() == [(6, 6, 6)]
    assert duckdb.sql(f"SELECT count(*) FROM '{out / 'manifest.parquet'}'").fetchall() == [(6,)]  # compacted, no factory
    assert not (out / ".factory" / "lease.json").exists()  # released at the end of the run


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
    from factory.store import writer

    writer.reopen_for_repair(Store.open(out, writable=True))  # status planned, no compacted manifest: all parts present
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
    assert "different config (n, seed, structure.sampler.steps differ)" in text and "--overwrite" in text
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
    for extra in ([], ["--steps", "5", "--overwrite"]):  # a second writer, even one that would replace the store
        second = CliRunner().invoke(app, cli_args(tiny_model, out, n=24, shard_size=2, extra=extra))
        if proc.poll() is None:  # the first run is still alive: refused in one sentence, nothing changed
            assert second.exit_code == 2 and "is being written by another factory run" in second.output, second.output
    assert Store.open(out).spec.structure["sampler"]["steps"] == SAMPLER["steps"]
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


def test_out_is_never_a_file_and_overwrite_keeps_the_users_files(r1, ray_local, tiny_model, tmp_path):
    (tmp_path / "file.zarr").write_text("not a store")
    for extra in ([], ["--overwrite"]):
        r = CliRunner().invoke(app, cli_args(tiny_model, tmp_path / "file.zarr", extra=extra))
        assert r.exit_code == 2 and "is a file, not a store" in r.output
    assert (tmp_path / "file.zarr").read_text() == "not a store"
    out = tmp_path / "mine.zarr"
    shutil.copytree(r1[0], out)
    (out / "notes.txt").write_text("my notes")
    (out / "figures").mkdir()
    r = CliRunner().invoke(app, cli_args(tiny_model, out, extra=["--seed", "8", "--overwrite"]))
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "my notes" and (out / "figures").is_dir()
    assert Store.open(out).spec.seed == 8 and CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0


def test_finalize_removes_temp_files_a_dead_commit_left(r1, tiny_model, tmp_path):
    from factory.store import writer

    out = tmp_path / "t.zarr"
    shutil.copytree(r1[0], out)
    writer.reopen_for_repair(Store.open(out, writable=True))
    (out / "manifest" / ".part-000001.parquet.0123.tmp").write_bytes(b"half a part")
    assert generate(config(tiny_model, out)).status == "complete"
    assert not list((out / "manifest").glob(".*.tmp"))
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0


def _generate_in_a_subprocess(tiny_model, out, ray_tmp, extra, timeout=60, env_extra=None):
    argv = [str(Path(sys.executable).parent / "factory"), *cli_args(tiny_model, out, extra=extra)]
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # this module's own Ray is not the cluster asked for
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**env, "RAY_TMPDIR": ray_tmp, **(env_extra or {})})
    return done, time.monotonic() - t0


def test_address_auto_never_hangs_and_leaves_no_stub_store(tiny_model, tmp_path):
    """A stale address (another Ray's, listening elsewhere), no cluster at all, and a port that accepts TCP
    but never speaks Ray: each one sentence, exit 2, within seconds, and no store left behind."""
    import socket
    import threading

    from ray._private.services import find_gcs_addresses

    ray_tmp = tempfile.mkdtemp(prefix="ra", dir="/tmp")
    os.makedirs(os.path.join(ray_tmp, "ray"))
    done, took = _generate_in_a_subprocess(tiny_model, tmp_path / "a.zarr", ray_tmp, ["--address", "auto"],
                                           env_extra={"RAY_ADDRESS": "127.0.0.1:9"})  # what auto resolves first
    assert done.returncode == 2 and re.search(r"cannot reach a Ray cluster at [\d.]+:9 \(found by --address auto\)",
                                              done.stderr), done.stderr[-2000:]
    assert took < 30 and not (tmp_path / "a.zarr").exists()
    if not find_gcs_addresses():  # auto also adopts any Ray running on the host: only then is there none to find
        done, _ = _generate_in_a_subprocess(tiny_model, tmp_path / "a.zarr", ray_tmp, ["--address", "auto"])
        assert done.returncode == 2 and "found no running Ray cluster" in done.stderr and "Traceback" not in done.stderr
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: a dead or foreign service
    port, stop = server.getsockname()[1], threading.Event()
    held = []

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        done, took = _generate_in_a_subprocess(tiny_model, tmp_path / "a.zarr", ray_tmp,
                                               ["--address", f"127.0.0.1:{port}", "--connect-timeout-s", "5"], timeout=90)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert took < 60 and not (tmp_path / "a.zarr").exists()


def test_progress_goes_to_a_log_file_as_lines(r1, ray_local, tiny_model, tmp_path):
    """stderr is not a terminal under CliRunner: the run logs plain progress lines, not a bar."""
    r = CliRunner().invoke(app, cli_args(tiny_model, tmp_path / "log.zarr"))
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("generate: ")]
    assert lines and lines[-1].startswith("generate: 6/6 samples") and "samples/s" in lines[-1]
    assert not any("nan" in line for line in lines) and "ETA" not in lines[-1]  # no ETA without a rate, none at the end
    assert "Token authentication is enabled" not in r.output


@pytest.mark.parametrize("size_kb", [8, 48])
def test_a_full_disk_is_one_sentence_and_the_store_stays_resumable(tiny_model, tmp_path, size_kb):
    """A real full filesystem (a tmpfs of a few kB in a private mount namespace): at plan time (8 kB) or
    mid-run (48 kB) the run stops with one sentence about the space, never a traceback."""
    ray_tmp = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    disk = tmp_path / "disk"
    disk.mkdir()
    factory = Path(sys.executable).parent / "factory"
    args = " ".join(cli_args(tiny_model, disk / "s.zarr", n=24, shard_size=2, extra=["--workers", "1"]))
    script = f"mount -t tmpfs -o size={size_kb}k tmpfs {disk} && exec {factory} {args}"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=240, env=env)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no space left on the device" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]


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
    result = generate(GenerateConfig(n=2, out=tmp_path / "o.zarr", structure=StructureConfig(model=str(model), sampler=SAMPLER),
                                     batch_size=2, shard_size=2, seed=0, hr_size=16), ClusterConfig(workers=1))
    assert result.status == "incomplete" and list(result.failed_shards) == [0]
    sentence = result.failure_sentence()
    assert "non-finite images" in sentence and "deterministic" in sentence and "retry" not in sentence
