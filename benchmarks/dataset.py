"""Reading a store: decoders side by side, the cost of checking every sample, and the PyTorch dataset
against raw reads of the same shards, on a local folder and on an S3 API (moto on 127.0.0.1), one run.

    .venv/bin/python benchmarks/dataset.py [--n 4096] [--hr 64] [--shard-size 32] [--batch-size 32] [--no-s3]

A pairs store is built without Ray (the real pairs stage and writer) from smooth random HR images. Per
location, samples/s for one pass over every shard of hr and lr (best of ``--repeats``):

- decode only: zarr-python (``array[slice]``), tensorstore (the reader's default), and zarrs (the Rust
  codec pipeline for zarr-python) when it is installed;
- checked: :meth:`Store.read_shard` = tensorstore + the xxh3-128 of every sample compared with the
  manifest; the ratio to tensorstore alone is what checking costs;
- the dataset (``factory.data.PairDataset``) with 0 and 2 DataLoader workers, plain and with bilinear
  upsampling + percentile normalization (CARE's), against the raw zarr-python read.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from factory.data import DataConfig, Normalization, Upsample, make_loader
from factory.optics import DegradationConfig
from factory.pipeline.finalize import finalize
from factory.pipeline.tasks import pairs_shard
from factory.store import Location, RunSpec, Store, writer
from factory.store.lease import Lease
from factory.store.reader import ShardReader, sample_checksum


def build_store(url: str, n: int, hr: int, shard_size: int) -> Store:
    structure = {"kind": "ddpm", "id": "ab" * 32, "model_id": "ab" * 32, "model_path": "/nowhere/m.safetensors",
                 "sampler": {"kind": "dpmpp", "steps": 20, "eta": 0.0}, "bf16": False}
    spec = RunSpec(n=n, seed=0, shard_size=shard_size, batch_size=8, product="pairs", structure=structure, hr_size=hr,
                   lr_size=hr // 4, hr_pixel_nm=40.0, lr_pixel_nm=160.0,
                   degradation=DegradationConfig(photons=(200, 2000)).to_dict(), package_version="0.1.0")
    loc = Location.parse(url)
    rng = np.random.default_rng(0)
    with Lease(loc) as lease:
        store = writer.create(loc, spec, {"preset": "benchmark"})
        for k in range(spec.num_shards):
            sl = store.shard_slice(k)
            block = gaussian_filter(rng.random((sl.stop - sl.start, hr, hr), dtype=np.float32), (0, 1.5, 1.5))
            block = ((block - block.min()) / (block.max() - block.min())).astype(np.float32)  # (S, H, W)
            out = pairs_shard(spec, k, block, "cpu", lease.run_id)
            writer.commit_shard(store, k, out.blocks, out.table, lease.run_id)
        finalize(Store.open(loc, writable=True))
    return Store.open(loc)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decode_pass(store: Store, how: str, reader: ShardReader) -> None:
    """Every shard of hr and lr, decoded by ``how`` (zarr | tensorstore | checked); handles opened beforehand."""
    for k in range(store.num_shards):
        sl = store.shard_slice(k)
        for name in ("hr", "lr"):
            if how == "checked":
                store.read_shard(name, k)
            elif how == "tensorstore":
                reader._decode(store.arrays[name], k, sl.start, sl.stop)
            else:
                store.zarr_array(name)[sl]


def timed_pass(url: str, how: str, repeats: int) -> float:
    store = Store.open(url)
    reader = ShardReader(store, "tensorstore")
    store._reader = reader
    decode_pass(store, how, reader)  # open every handle and read the compacted manifest once, as a worker does
    return best_of(lambda: decode_pass(store, how, reader), repeats)


def hash_pass(store: Store) -> float:
    """Seconds to checksum (xxh3-128) every sample once: what checking adds to a decode."""
    blocks = [store.zarr_array(name)[store.shard_slice(k)] for k in range(store.num_shards) for name in ("hr", "lr")]
    t = time.perf_counter()
    for block in blocks:
        for sample in block:
            sample_checksum(sample)
    return time.perf_counter() - t


@contextlib.contextmanager
def zarrs_pipeline():
    import zarr

    try:
        import zarrs  # noqa: F401
    except ImportError:
        yield False
        return
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        yield True


def dataset_epoch(loader, epoch: list[int]) -> int:
    loader.dataset.set_epoch(epoch[0])
    epoch[0] += 1
    return sum(len(hr) for _, hr in loader)


def measure(url: str, args, label: str) -> None:
    t = time.perf_counter()
    store = build_store(url, args.n, args.hr, args.shard_size)
    size = sum(store.loc.sizes().values()) / 1e6
    print(f"\n[{label}] {url}: {args.n} pairs, HR {args.hr}^2 float32, LR {args.hr // 4}^2 uint16, "
          f"{store.num_shards} shards of {args.shard_size}, {size:.1f} MB, built in {time.perf_counter() - t:.1f} s")
    rate = {}
    for how in ("zarr", "tensorstore", "checked"):
        rate[how] = args.n / timed_pass(url, how, args.repeats)
    with zarrs_pipeline() as available:
        if available:
            rate["zarrs"] = args.n / timed_pass(url, "zarr", args.repeats)
    for how, r in rate.items():
        print(f"  {'decode ' + how:44s} {r:9.0f} samples/s   {r / rate['zarr']:5.2f} x zarr-python")
    hashing = hash_pass(store)
    print(f"  checking cost: checked / tensorstore = {rate['checked'] / rate['tensorstore']:.2f}; xxh3-128 alone "
          f"{args.n / hashing:.0f} samples/s = {hashing * rate['tensorstore'] / args.n:.1%} of a tensorstore pass")
    plain = DataConfig(url, seed=0)
    care = DataConfig(url, seed=0, upsample=Upsample.bilinear, normalize=Normalization.percentile)
    for name, cfg in (("dataset", plain), ("dataset + bilinear + percentile", care)):
        for workers in (0, 2):
            loader, epoch = make_loader(cfg, args.batch_size, workers), [0]
            assert dataset_epoch(loader, epoch) == args.n
            r = args.n / best_of(lambda: dataset_epoch(loader, epoch), args.repeats)
            print(f"  {name + f', {workers} workers':44s} {r:9.0f} samples/s   {r / rate['zarr']:5.2f} x raw zarr-python")


@contextlib.contextmanager
def moto_s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=f"http://{host}:{port}",
                      AWS_DEFAULT_REGION="us-east-1")
    import boto3

    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="bench")
    try:
        yield "s3://bench/pairs.zarr"
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096, help="samples in the store")
    ap.add_argument("--hr", type=int, default=64, help="HR side, px (LR = HR / 4)")
    ap.add_argument("--shard-size", type=int, default=32, help="samples per shard")
    ap.add_argument("--batch-size", type=int, default=32, help="DataLoader batch size")
    ap.add_argument("--repeats", type=int, default=3, help="passes timed per configuration (best is reported)")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) measurements")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one core per reader, like a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        measure(str(Path(tmp) / "bench.zarr"), args, "local")
    if not args.no_s3:
        with moto_s3() as url:
            measure(url, args, "S3 API (moto, 127.0.0.1)")


if __name__ == "__main__":
    main()
