"""The manifest at scale: reading 100,000 rows from 6,250 commit-marker parts vs the one compacted file
written at finalize, locally and on an S3 API (moto on 127.0.0.1), in one run.

    .venv/bin/python benchmarks/manifest.py [--n 100000] [--shard-size 16] [--no-s3]

The store is real (the writer commits every shard: tiny 8 x 8 HR images, so that the manifest dominates);
timed: ``Store.manifest()`` (every column, sample_id order) and ``factory query``'s path
(``query.run(store, "SELECT count(*) ... WHERE photons < 300")``), once with the store ``planned`` (every
part read and schema-checked) and once ``complete`` (the compacted file). Best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from factory import query
from factory.optics import DegradationConfig
from factory.pipeline.finalize import finalize
from factory.pipeline.tasks import pairs_shard
from factory.store import Location, RunSpec, Store, writer
from factory.store.lease import Lease

SQL = "SELECT count(*) FROM manifest WHERE photons < 300"


def build(url: str, n: int, shard_size: int) -> None:
    structure = {"kind": "simulate", "id": "cd" * 32, "config": {}}
    spec = RunSpec(n=n, seed=0, shard_size=shard_size, batch_size=shard_size, product="pairs", structure=structure,
                   hr_size=8, lr_size=2, hr_pixel_nm=40.0, lr_pixel_nm=160.0,
                   degradation=DegradationConfig(photons=(100, 3000), downsample=4).to_dict(), package_version="0.1.0")
    loc = Location.parse(url)
    rng = np.random.default_rng(0)
    with Lease(loc) as lease:
        store = writer.create(loc, spec, {})
        for k in range(spec.num_shards):
            sl = store.shard_slice(k)
            out = pairs_shard(spec, k, rng.random((sl.stop - sl.start, 8, 8), dtype=np.float32), "cpu", lease.run_id)
            writer.commit_shard(store, k, out.blocks, out.table, lease.run_id)
        finalize(Store.open(loc, writable=True))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(url: str, n: int, repeats: int, label: str) -> None:
    store = Store.open(url)
    compacted = {"manifest": best_of(lambda: Store.open(url).manifest(), repeats),
                 "query": best_of(lambda: query.run(Store.open(url), SQL), repeats)}
    writer.reopen_for_repair(Store.open(url, writable=True))  # planned: readers go back to the parts
    parts = {"manifest": best_of(lambda: Store.open(url).manifest(), 1),
             "query": best_of(lambda: query.run(Store.open(url), SQL), 1)}
    assert Store.open(url).manifest().num_rows == n
    finalize(Store.open(url, writable=True))
    print(f"\n[{label}] {n} rows in {store.num_shards} parts")
    for what in ("manifest", "query"):
        print(f"  {what:9s} parts {parts[what]:8.3f} s   compacted {compacted[what]:8.3f} s   "
              f"{parts[what] / compacted[what]:6.0f} x faster")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "m.zarr")
        t = time.perf_counter()
        build(url, args.n, args.shard_size)
        print(f"built {args.n} rows locally in {time.perf_counter() - t:.0f} s")
        measure(url, args.n, args.repeats, "local")
        if args.no_s3:
            return
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b", AWS_ENDPOINT_URL=f"http://{host}:{port}",
                          AWS_DEFAULT_REGION="us-east-1")
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        t = time.perf_counter()
        for path in Path(url).rglob("*"):
            if path.is_file():
                s3.put_object(Bucket="bench", Key=f"m.zarr/{path.relative_to(url).as_posix()}", Body=path.read_bytes())
        print(f"uploaded to S3 in {time.perf_counter() - t:.0f} s")
        try:
            measure("s3://bench/m.zarr", args.n, args.repeats, "S3 API (moto, 127.0.0.1)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
