"""Degrade + commit: one CPU Ray task per shard.

For every sample i of shard k, with i's own generator ``degradation_rng(seed, i)``:
draw the parameters from the run's ranges, then degrade HR -> LR with the same
generator (parameters first, then noise: the order is fixed, so a shard redone
gives the same bytes). Then commit the whole shard (:meth:`factory.store.Store.write_shard`):
zarr shard of ``hr``, zarr shard of ``lr``, manifest part last.

The task asks Ray for no logical CPU: the sampler actors hold the CPUs, and the
driver's in-flight bound (2 shards per worker) is what limits how many of these
run at once. A failing task is retried by Ray (``commit_attempts``) before the
driver reports the shard.
"""
from __future__ import annotations

import socket
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import ray

from factory import seeding
from factory.pipeline import schemas
from factory.pipeline.spec import RunSpec
from factory.store import Store, now_utc, sample_checksum, tune_zarr_for_shard_writes


def degrade_shard(spec: RunSpec, shard: int, hr: np.ndarray, device: str) -> tuple[np.ndarray, pa.Table]:
    """LR images and manifest rows of one shard: hr (S, H, W) float32 -> lr (S, h, w) uint16, table of S rows."""
    from factory.optics import degrade

    cfg = spec.degradation_config()
    ids = spec.shard_ids(shard)
    lr = np.empty((len(ids), spec.lr_size, spec.lr_size), np.uint16)  # (S, h, w) ADU
    created_at, host, package = now_utc(), socket.gethostname(), version("factory")
    rows = []
    for j, i in enumerate(ids):
        rng = seeding.degradation_rng(spec.seed, i)
        params = cfg.draw(rng)
        lr[j] = degrade(hr[j], spec.hr_pixel_nm, params, rng)  # (h, w) uint16
        rows.append({"sample_id": i, "shard": shard, "seed": seeding.sample_seed(spec.seed, i),
                     "model_id": spec.model_id, "sampler": spec.sampler["kind"], "steps": spec.sampler["steps"],
                     "eta": float(spec.sampler.get("eta", 0.0)), "device": device,
                     "hr_pixel_nm": spec.hr_pixel_nm, "lr_pixel_nm": spec.lr_pixel_nm,
                     **params.to_record(), **image_stats(hr[j], lr[j]),
                     "hr_checksum": sample_checksum(hr[j]), "lr_checksum": sample_checksum(lr[j]),
                     "host": host, "created_at": created_at, "package_version": package})
    return lr, pa.Table.from_pylist(rows, schema=schemas.manifest_schema())


def image_stats(hr: np.ndarray, lr: np.ndarray) -> dict:
    """Per-sample statistics for the manifest: hr (H, W) in [0, 1], lr (h, w) ADU."""
    lr64 = lr.astype(np.float64)
    return {"hr_mean": float(hr.mean(dtype=np.float64)), "hr_std": float(hr.std(dtype=np.float64)),
            "hr_max": float(hr.max()), "lr_mean_adu": float(lr64.mean()), "lr_std_adu": float(lr64.std()),
            "lr_min_adu": int(lr.min()), "lr_max_adu": int(lr.max())}


@ray.remote(num_cpus=0)
def commit_shard(store_path: str, spec: RunSpec, shard: int, sampled: dict) -> dict:
    """Degrade shard k's HR images and commit the shard; returns {shard, samples, host}.

    ``sampled`` is the sampler actor's result ({"hr": (S, H, W) float32, "device": str}),
    passed by reference, so the HR block goes from the actor to this task without the driver.
    """
    tune_zarr_for_shard_writes(spec.shard_size)
    hr = np.asarray(sampled["hr"], dtype=np.float32)  # (S, H, W)
    lr, table = degrade_shard(spec, shard, hr, sampled["device"])
    Store.open(store_path, writable=True).write_shard(shard, hr, lr, table)
    return {"shard": shard, "samples": len(table), "host": socket.gethostname()}


@ray.remote(num_cpus=0)
def warm_up() -> str:
    """A no-op run while the actors load the model: it starts a worker and imports this module
    there, so the first commits do not pay for it while the samplers are busy."""
    return socket.gethostname()
