"""``factory generate`` pipeline numbers, side by side in one run.

    python benchmarks/pipeline.py [--n 32] [--steps 10] [--batch 8] [--shard 8] [--workers 2] [--repeats 2]

Models: the small preset (64x64, T=2000, the shipped model's architecture) with random
weights: speed does not depend on the weights; the tiny preset for the memory test.

1. end-to-end ``generate`` throughput / bare sampler throughput: the same sampler actors
   (model, sampler, steps, batch, workers) turning the same shards into HR images with
   nothing else (no degrade, no store, no driver bookkeeping); target >= 0.90. Both
   are timed from actor creation, so both include the actors' start-up (model load).
2. store write throughput (``writer.commit_shard``: zstd zarr shards of hr and lr, the lease check,
   the manifest part with fsync and an exclusive link) / ``numpy.tofile`` of the same bytes in the same folder.
3. driver peak RSS (ru_maxrss of a fresh driver process) for n=1024 / n=64, tiny model.
4. end-to-end throughput with 2 workers / 1 worker.
5. largest |HR difference| of samples 0..7 drawn in batches of 8 vs 2 (dpmpp; the shipped
   model when installed, else the random small preset, whose untrained net amplifies it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import ray
import torch

from factory.diffusion import checkpoint
from factory.diffusion.checkpoint import ModelConfig
from factory.diffusion.sampling import SamplerConfig, sample_images
from factory.diffusion.schedule import ScheduleConfig
from factory.diffusion.unet import PRESETS, UNet
from factory.pipeline import plan as planning
from factory.pipeline.actors import source_payload, start_actor
from factory.pipeline.cluster import ray_session
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Location, Store, writer
from factory.store.lease import Lease
from factory.store.writer import tune_zarr_for_shard_writes
from factory.structures import StructureConfig


def random_checkpoint(preset: str, T: int, path: Path) -> Path:
    torch.manual_seed(0)
    net = UNet(PRESETS[preset])
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialized output layers too, so samples carry signal
            p.normal_(0, 0.05)
    checkpoint.save(path, net, ModelConfig(PRESETS[preset], ScheduleConfig(num_timesteps=T), hr_pixel_nm=40.0),
                    card={"name": f"random {preset} (benchmark)"})
    return path


def bare_sampler(cfg: GenerateConfig, workers: int, use_gpu: bool = False) -> tuple[float, float]:
    """(actor start-up s, sampling wall s) of the same actors sampling the same shards, results dropped."""
    spec, _ = planning.resolve(cfg)
    t0 = time.perf_counter()
    payload = ray.put(source_payload(spec))
    actors = [start_actor(spec, payload, use_gpu=use_gpu) for _ in range(workers)]
    ray.get([a.ready_ref for a in actors])
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    refs = [actors[k % workers].handle.make_shard.remote(spec, k) for k in range(spec.num_shards)]
    while refs:
        _, refs = ray.wait(refs, num_returns=1, fetch_local=False)
    wall = time.perf_counter() - t0
    for a in actors:
        ray.kill(a.handle)
    return startup, wall


def store_write_ratio(src: Path, tmp: Path, repeats: int = 3) -> tuple[float, float]:
    """(store MB/s, tofile MB/s) over the array bytes of every shard of ``src``."""
    s = Store.open(src)
    blocks = [(k, s.read_shard("hr", k), s.read_shard("lr", k), s.manifest_part(k)) for k in range(s.num_shards)]
    nbytes = sum(hr.nbytes + lr.nbytes for _, hr, lr, _ in blocks)
    best_store, best_raw = np.inf, np.inf
    for r in range(repeats):
        loc = Location.parse(tmp / f"w{r}.zarr")
        with Lease(loc) as lease:
            dst = writer.create(loc, s.spec, {})
            t0 = time.perf_counter()
            for k, hr, lr, table in blocks:  # whole zarr shards, lease check, exclusive marker with fsync
                writer.commit_shard(dst, k, {"hr": hr, "lr": lr}, table, lease.run_id)
            best_store = min(best_store, time.perf_counter() - t0)
        out = Path(loc.root)
        raw = tmp / f"raw{r}"
        raw.mkdir()
        t0 = time.perf_counter()
        for k, hr, lr, _ in blocks:
            hr.tofile(raw / f"hr{k}")
            lr.tofile(raw / f"lr{k}")
        best_raw = min(best_raw, time.perf_counter() - t0)
        shutil.rmtree(out)
        shutil.rmtree(raw)
    return nbytes / best_store / 1e6, nbytes / best_raw / 1e6


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from factory.pipeline.driver import generate
    from factory.pipeline.spec import ClusterConfig, GenerateConfig
    from factory.structures import StructureConfig
    n, out, model = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cfg = GenerateConfig(n=n, out=out, structure=StructureConfig(model=model, sampler={"kind": "dpmpp", "steps": 2, "eta": 0.0}),
                         batch_size=16, shard_size=16, overwrite=True)
    r = generate(cfg, ClusterConfig(workers=2))
    assert r.status == "complete", r
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def driver_peak_rss_mb(n: int, model: Path, tmp: Path) -> float:
    ray_tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(n), str(tmp / f"rss{n}.zarr"), str(model)],
                              capture_output=True, text=True, env={**os.environ, "RAY_TMPDIR": ray_tmp}, check=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def batch_difference(model: Path, steps: int) -> float:
    torch.set_num_threads(1)
    ckpt = checkpoint.load(model)
    cfg = SamplerConfig(steps=steps)
    together = sample_images(ckpt, range(8), 0, cfg)  # (8, 64, 64)
    pairs = np.concatenate([sample_images(ckpt, range(j, j + 2), 0, cfg) for j in range(0, 8, 2)])
    return float(np.abs(together - pairs).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--shard", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best of each is kept (busy machines)")
    ap.add_argument("--hr-size", type=int, default=None, help="HR side, px (default: the preset's 64)")
    ap.add_argument("--gpu", action="store_true", help="the actors run on the GPU (num_gpus=1): measures 1 and 5 only")
    args = ap.parse_args()
    tune_zarr_for_shard_writes(args.shard)  # as every commit task does, before any zarr I/O
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    small = random_checkpoint("small", 2000, tmp / "small.safetensors")
    tiny = random_checkpoint("tiny", 50, tmp / "tiny.safetensors")
    source = StructureConfig(model=str(small), sampler={"kind": "dpmpp", "steps": args.steps, "eta": 0.0})
    cfg = GenerateConfig(n=args.n, out=tmp / "e2e.zarr", structure=source, batch_size=args.batch, shard_size=args.shard,
                         hr_size=args.hr_size, overwrite=True)
    print(f"small preset {args.hr_size or 64}x{args.hr_size or 64}, dpmpp {args.steps} steps, batch {args.batch}, shard {args.shard}, n={args.n}, "
          f"{args.workers} workers, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, best of {args.repeats}")
    bare, startup, e2e, e2e_1 = [], [], [], []
    with ray_session(ClusterConfig(workers=args.workers)):
        if args.gpu:
            up, wall = bare_sampler(cfg, args.workers, use_gpu=True)
            t0 = time.perf_counter()
            result = generate(cfg, ClusterConfig(workers=args.workers))
            e2e_s = time.perf_counter() - t0
            print(f"1. GPU generate / bare sampler throughput: {(up + wall) / e2e_s:.3f} (bare {args.n / (up + wall):.1f} "
                  f"samples/s, generate {args.n / e2e_s:.1f} samples/s end to end incl. plan, degrade, commit, finalize; "
                  f"{up:.1f} s actor start-up; devices {sorted(set(Store.open(cfg.out).manifest(['device']).column(0).to_pylist()))})")
            assert result.status == "complete"
            return
        for _ in range(args.repeats):  # interleaved, so that a load change hits every variant
            up, wall = bare_sampler(cfg, args.workers)
            startup.append(up)
            bare.append(up + wall)
            for workers, walls in ((args.workers, e2e), (1, e2e_1)):
                t0 = time.perf_counter()
                generate(cfg, ClusterConfig(workers=workers))
                walls.append(time.perf_counter() - t0)
    bare_s, e2e_s, e2e1_s, up_s = min(bare), min(e2e), min(e2e_1), min(startup)
    print(f"1. generate / bare sampler throughput: {bare_s / e2e_s:.3f} [target >= 0.90] (both from actor creation: "
          f"bare {args.n / bare_s:.2f} samples/s, generate {args.n / e2e_s:.2f} samples/s incl. plan, degrade, commit, "
          f"finalize; {up_s:.1f} s of each is actor start-up)")
    store_mb_s, raw_mb_s = store_write_ratio(tmp / "e2e.zarr", tmp)
    H = args.hr_size or 64
    per_shard_ms = args.shard * (H * H * 4 + (H // 4) ** 2 * 2) / store_mb_s / 1e3
    print(f"2. store write / numpy.tofile: {store_mb_s / raw_mb_s:.3f} ({store_mb_s:.1f} vs {raw_mb_s:.0f} MB/s of array "
          f"bytes; {per_shard_ms:.0f} ms per {args.shard}-sample shard incl. manifest part, vs "
          f"{bare_s / (args.n / args.shard) * args.workers:.1f} s to sample it)")
    rss64, rss1024 = driver_peak_rss_mb(64, tiny, tmp), driver_peak_rss_mb(1024, tiny, tmp)
    print(f"3. driver peak RSS n=1024 / n=64: {rss1024 / rss64:.3f} ({rss1024:.0f} vs {rss64:.0f} MiB) [target <= 1.2]")
    print(f"4. {args.workers} workers / 1 worker generate throughput: {e2e1_s / e2e_s:.2f} ({e2e_s:.1f} s vs {e2e1_s:.1f} s wall)")
    trained = checkpoint.DEFAULT_MODEL.is_file()
    which = "the shipped model, dpmpp 20 steps" if trained else f"small preset, random weights, dpmpp {args.steps} steps"
    diff = batch_difference(checkpoint.DEFAULT_MODEL if trained else small, 20 if trained else args.steps)
    print(f"5. max |HR(batch 8) - HR(batch 2)|, {which}: {diff:.3g}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
