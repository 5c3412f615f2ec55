"""``factory generate`` end to end on a real local Ray with the tiny model: store contents,
rerun semantics, config mismatch, determinism across workers / n / batch size / a kill -9."""
from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pytest

from factory.errors import FactoryError
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Store, sample_checksum

STEPS = {"kind": "dpmpp", "steps": 4, "eta": 0.0}


def config(tiny_model, out, **changes) -> GenerateConfig:
    base = GenerateConfig(n=6, out=out, model=str(tiny_model), sampler=STEPS, batch_size=2, shard_size=4, seed=7)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def reference(ray_local, tiny_model, tmp_path_factory):
    """One uninterrupted n=6 run (2 workers) that other tests compare against."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    result = generate(config(tiny_model, out), ClusterConfig(workers=2))
    return out, result


def test_generate_writes_a_complete_verifiable_store(reference):
    out, result = reference
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
    assert duckdb.sql(f"SELECT count(*), min(steps), max(steps) FROM '{store.manifest_glob}'").fetchall() == [(6, 4, 4)]
