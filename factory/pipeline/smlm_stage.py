"""The ``smlm`` product: each shard's HR densities -> SMLM frame stacks, per-frame KDE targets, emitter tables.

For sample i, everything random comes from ``seeding.degradation_rng(seed, i)``: the parameters first
(``SmlmConfig.draw``), then labels, blinking and camera noise (:func:`factory.smlm.simulate_sample`), in a
fixed order, so a shard redone gives the same bytes. The run's sCMOS maps are a pure function of (run
seed, config) (:meth:`factory.smlm.CameraMaps.draw`): every task draws the same maps the store keeps
under ``camera/``. Arrays: ``hr`` (S, H, W), ``frames`` (S, F, h, w) uint16 ADU, ``kde`` (S, F, H, W)
float32; the emitters of the shard become ``emitters/part-k`` (written before the commit marker).
"""
from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from factory import seeding
from factory.pipeline.tasks import RowContext, ShardOutput
from factory.store import RunSpec, schemas


@functools.lru_cache(maxsize=4)
def camera_maps(degradation_json: str, run_seed: int, shape: tuple[int, int]):
    """The run's camera maps (None without maps), drawn once per process per run."""
    import json

    from factory.smlm import CameraMaps, SmlmConfig

    return CameraMaps.draw(SmlmConfig.from_dict(json.loads(degradation_json)), run_seed, shape)


def run_camera_maps(spec: RunSpec):
    import json

    return camera_maps(json.dumps(spec.degradation, sort_keys=True), spec.seed, (spec.lr_size, spec.lr_size))


def smlm_shard(spec: RunSpec, shard: int, hr: np.ndarray, device: str, run_id: str) -> ShardOutput:
    """hr (S, H, W) float32 -> frames (S, F, h, w) uint16, kde (S, F, H, W) float32, rows and emitters."""
    from factory.smlm import simulate_sample

    cfg = spec.degradation_config()
    maps = run_camera_maps(spec)
    ids = spec.shard_ids(shard)
    F, h, H = spec.frames, spec.lr_size, spec.hr_size
    frames = np.empty((len(ids), F, h, h), np.uint16)  # (S, F, h, w) ADU
    kde = np.empty((len(ids), F, H, H), np.float32)  # (S, F, H, W)
    records, emitters = [], []
    for j, i in enumerate(ids):
        rng = seeding.degradation_rng(spec.seed, i)
        params = cfg.draw(rng)
        s = simulate_sample(hr[j], spec.hr_pixel_nm, params, rng, sample_id=i, camera_maps=maps)
        frames[j], kde[j] = s.frames, s.kde
        emitters.append(s.emitters)
        records.append({**params.to_record(), **s.stats, "hr_mean": float(hr[j].mean(dtype=np.float64)),
                        "hr_std": float(hr[j].std(dtype=np.float64)), "hr_max": float(hr[j].max())})
    blocks = {"hr": hr, "frames": frames, "kde": kde}
    ctx = RowContext.make(spec, shard, device, run_id)
    rows = [ctx.row(i, record, blocks, j) for j, (i, record) in enumerate(zip(ids, records))]
    table = pa.Table.from_pylist(rows, schema=schemas.manifest_schema("smlm"))
    return ShardOutput(blocks, table, {"emitters": pa.concat_tables(emitters)})
