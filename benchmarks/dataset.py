"""Throughput of ``factory.data`` against a raw zarr read of the same shards, same run.

    .venv/bin/python benchmarks/dataset.py [--n 4096] [--hr 64] [--shard-size 32] [--batch-size 32]

A store is built in a temp dir without Ray (real Zarr v3 + Parquet through ``Store.write_shard``,
LR and manifest rows from the real degrade path ``tasks.degrade_shard``) with smooth random HR
images. Then, per configuration, one full epoch in samples/s (best of ``--repeats``):

- raw: ``store.hr[shard]`` and ``store.lr[shard]`` for every shard in one loop (zarr-python's
  decode only, no tensors, no batching), and the same shards decoded by ``factory.shard_reader``
  (what the dataset uses);
- dataset with 0 and 2 DataLoader workers (one loader per configuration, made before timing as a
  training script does; batches of ``--batch-size``; upsampling off, and bilinear + percentile
  normalization; the 2-worker figure includes starting the workers, which happens every epoch).

The target was dataset / raw zarr >= 0.8; the direct shard decode puts the dataset above raw zarr.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from factory.data import DataConfig, Normalization, Upsample, make_loader
from factory.optics import DegradationConfig
from factory.pipeline.spec import RunSpec
from factory.pipeline.tasks import degrade_shard
from factory.shard_reader import read_shard
from factory.store import Store


def build_store(path: Path, n: int, hr: int, shard_size: int) -> Store:
    spec = RunSpec(n=n, seed=0, shard_size=shard_size, batch_size=8, sampler={"kind": "dpmpp", "steps": 20, "eta": 0.0},
                   model_id="ab" * 32, model_path="/nowhere/model.safetensors", hr_size=hr, lr_size=hr // 4,
                   hr_pixel_nm=40.0, lr_pixel_nm=160.0, degradation=DegradationConfig(photons=(200, 2000)).to_dict(),
                   package_version="0.1.0")
    store = Store.create(path, spec, {"preset": "benchmark"})
    rng = np.random.default_rng(0)
    for k in range(spec.num_shards):
        sl = store.shard_slice(k)
        block = gaussian_filter(rng.random((sl.stop - sl.start, hr, hr), dtype=np.float32), (0, 1.5, 1.5))  # (S, H, W)
        block = (block - block.min()) / (block.max() - block.min())
        lr, table = degrade_shard(spec, k, block.astype(np.float32), "cpu")
        store.write_shard(k, block.astype(np.float32), lr, table)
    return store


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def raw_epoch(path: Path, direct: bool) -> int:
    """Every committed shard of hr and lr read whole: through zarr (``store.hr[slice]``) or decoded directly."""
    store = Store.open(path)
    count = 0
    for k in store.committed_shards():
        hr = read_shard(store.hr, store.path, "hr", k, direct=direct)  # (S, H, W) float32
        lr = read_shard(store.lr, store.path, "lr", k, direct=direct)  # (S, h, w) uint16
        count += min(len(hr), len(lr))
    return count


def dataset_epoch(loader, epoch: list[int]) -> int:
    """One epoch through a loader made once (as in training); the next call is the next epoch."""
    loader.dataset.set_epoch(epoch[0])
    epoch[0] += 1
    return sum(len(hr) for _, hr in loader)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096, help="samples in the store")
    ap.add_argument("--hr", type=int, default=64, help="HR side, px (LR = HR / 4)")
    ap.add_argument("--shard-size", type=int, default=32, help="samples per shard")
    ap.add_argument("--batch-size", type=int, default=32, help="DataLoader batch size")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per configuration (best is reported)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one core per reader, like a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t = time.perf_counter()
        store = build_store(path, args.n, args.hr, args.shard_size)
        print(f"store: {args.n} pairs, HR {args.hr}x{args.hr} float32, LR {args.hr // 4}x{args.hr // 4} uint16, "
              f"{store.num_shards} shards of {args.shard_size}, {store.stored_bytes() / 1e6:.1f} MB, built in {time.perf_counter() - t:.1f} s")
        raw = args.n / best_of(lambda: raw_epoch(path, direct=False), args.repeats)
        print(f"{'raw zarr read (whole shards, zarr-python)':48s} {raw:9.0f} samples/s")
        direct = args.n / best_of(lambda: raw_epoch(path, direct=True), args.repeats)
        print(f"{'raw direct shard decode (factory.shard_reader)':48s} {direct:9.0f} samples/s   {direct / raw:5.2f} x raw")
        plain = DataConfig(path, seed=0)
        care = DataConfig(path, seed=0, upsample=Upsample.bilinear, normalize=Normalization.percentile)
        for name, cfg in (("dataset", plain), ("dataset + bilinear + percentile", care)):
            for workers in (0, 2):
                loader, epoch = make_loader(cfg, args.batch_size, workers), [0]
                assert dataset_epoch(loader, epoch) == args.n
                rate = args.n / best_of(lambda: dataset_epoch(loader, epoch), args.repeats)
                print(f"{name + f', {workers} workers':48s} {rate:9.0f} samples/s   {rate / raw:5.2f} x raw")


if __name__ == "__main__":
    main()
