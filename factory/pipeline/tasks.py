"""Degrade + commit: one CPU Ray task per shard, whatever the product.

A product turns a shard's HR densities into the store's arrays and manifest rows
(``PRODUCTS[spec.product](spec, shard, hr, device, run_id) -> ShardOutput``), each sample with its
own generator (``factory.seeding``; parameters first, then noise, in a fixed order, so a shard
redone gives the same bytes). :func:`commit_shard` then commits the whole shard through
:func:`factory.store.writer.commit_shard` (whole zarr shards, side tables, lease check, the
manifest part last).

The task asks Ray for no logical CPU: the structure actors hold the CPUs, and the driver's
in-flight bound (2 shards per worker) limits how many of these run at once. A task failing on
a transient error (I/O, a lost worker) is retried by Ray (``commit_attempts``); a
:class:`FactoryError` (deterministic: bad data, a refused commit) is not retried.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from typing import Callable

import numpy as np
import pyarrow as pa
import ray

from factory.seeding import sample_seed
from factory.store import RunSpec, Store, now_utc, sample_checksum
from factory.store import schemas
from factory.store.writer import commit_shard as write_shard
from factory.store.writer import tune_zarr_for_shard_writes


@dataclass
class ShardOutput:
    blocks: dict[str, np.ndarray]  # array name -> (count, ...) block, for every data array of the store
    table: pa.Table  # the manifest part
    side_tables: dict[str, pa.Table] = field(default_factory=dict)  # e.g. {"emitters": ...}


@dataclass(frozen=True)
class RowContext:
    """What every manifest row of one commit shares."""

    spec: RunSpec
    shard: int
    device: str
    run_id: str
    host: str
    created_at: datetime
    package_version: str

    @classmethod
    def make(cls, spec: RunSpec, shard: int, device: str, run_id: str) -> "RowContext":
        return cls(spec, shard, device, run_id, socket.gethostname(), now_utc(), version("factory"))

    def row(self, sample_id: int, record: dict, blocks: dict[str, np.ndarray], j: int) -> dict:
        """The one manifest-row builder: identity and provenance, the product's ``record``, and a checksum per array."""
        s = self.spec.structure
        sampler = s.get("sampler") or {}
        head = {"sample_id": sample_id, "shard": self.shard, "seed": sample_seed(self.spec.seed, sample_id),
                "structure": s["kind"], "structure_id": s["id"], "model_id": s.get("model_id"),
                "sampler": sampler.get("kind"), "steps": sampler.get("steps"),
                "eta": float(sampler.get("eta", 0.0)) if sampler else None, "device": self.device,
                "hr_pixel_nm": self.spec.hr_pixel_nm, "lr_pixel_nm": self.spec.lr_pixel_nm}
        checksums = {f"{name}_checksum": sample_checksum(block[j]) for name, block in blocks.items()}
        return {**head, **record, **checksums, "run_id": self.run_id, "host": self.host, "created_at": self.created_at,
                "package_version": self.package_version}


def image_stats(hr: np.ndarray, lr: np.ndarray) -> dict:
    """Per-sample statistics for the manifest: hr (H, W) in [0, 1], lr (h, w) ADU."""
    lr64 = lr.astype(np.float64)
    return {"hr_mean": float(hr.mean(dtype=np.float64)), "hr_std": float(hr.std(dtype=np.float64)),
            "hr_max": float(hr.max()), "lr_mean_adu": float(lr64.mean()), "lr_std_adu": float(lr64.std()),
            "lr_min_adu": int(lr.min()), "lr_max_adu": int(lr.max())}


def pairs_shard(spec: RunSpec, shard: int, hr: np.ndarray, device: str, run_id: str) -> ShardOutput:
    """LR widefield frames and manifest rows of one shard: hr (S, H, W) float32 -> lr (S, h, w) uint16."""
    from factory.optics import degrade_sample

    cfg = spec.degradation_config()
    ids = spec.shard_ids(shard)
    lr = np.empty((len(ids), spec.lr_size, spec.lr_size), np.uint16)  # (S, h, w) ADU
    records = []
    for j, i in enumerate(ids):
        lr[j], params = degrade_sample(hr[j], spec.hr_pixel_nm, cfg, spec.seed, i)  # (h, w) uint16
        records.append({**params.to_record(), **image_stats(hr[j], lr[j])})
    blocks = {"hr": hr, "lr": lr}
    ctx = RowContext.make(spec, shard, device, run_id)
    rows = [ctx.row(i, record, blocks, j) for j, (i, record) in enumerate(zip(ids, records))]
    return ShardOutput(blocks, pa.Table.from_pylist(rows, schema=schemas.manifest_schema(spec.product)))


PRODUCTS: dict[str, Callable[[RunSpec, int, np.ndarray, str, str], ShardOutput]] = {"pairs": pairs_shard}


def product_stage(product: str) -> Callable[[RunSpec, int, np.ndarray, str, str], ShardOutput]:
    if product == "smlm" and "smlm" not in PRODUCTS:
        from factory.pipeline.smlm_stage import smlm_shard

        PRODUCTS["smlm"] = smlm_shard
    return PRODUCTS[product]


@ray.remote(num_cpus=0)
def commit_shard(location: str, spec: RunSpec, shard: int, made: dict, run_id: str) -> dict:
    """Degrade shard k's HR images and commit the shard; returns {shard, samples, host}.

    ``made`` is the structure actor's result ({"hr": (S, H, W) float32, "device": str}), passed by
    reference, so the HR block goes from the actor to this task without the driver.
    """
    tune_zarr_for_shard_writes(spec.shard_size)
    hr = np.asarray(made["hr"], dtype=np.float32)  # (S, H, W)
    out = product_stage(spec.product)(spec, shard, hr, made["device"], run_id)
    write_shard(Store.open(location, writable=True), shard, out.blocks, out.table, run_id, out.side_tables)
    return {"shard": shard, "samples": out.table.num_rows, "host": socket.gethostname()}


@ray.remote(num_cpus=0)
def warm_up() -> str:
    """A no-op run while the actors load their source: it starts a worker and imports this module
    there, so the first commits do not pay for it while the actors are busy."""
    return socket.gethostname()
