"""The store: layout, schemas validated on write and on open, commit marker, checksums, errors.

Real Zarr v3 and Parquet in temp dirs; manifest rows come from the real degrade path
(``tasks.degrade_shard``) on synthetic HR blocks, so no Ray is needed here.
"""
from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from factory.errors import FactoryError
from factory.optics import DegradationConfig, DegradationParams
from factory.pipeline import schemas
from factory.pipeline.spec import RunSpec
from factory.pipeline.tasks import degrade_shard
from factory.store import Store, sample_checksum


@pytest.fixture
def spec() -> RunSpec:
    """10 samples of 16x16 HR / 4x4 LR in shards of 4 (the last shard holds 2)."""
    return RunSpec(n=10, seed=3, shard_size=4, batch_size=2, sampler={"kind": "dpmpp", "steps": 5, "eta": 0.0},
                   model_id="ab" * 32, model_path="/nowhere/tiny.safetensors", hr_size=16, lr_size=4,
                   hr_pixel_nm=20.0, lr_pixel_nm=80.0, degradation=DegradationConfig(photons=(200, 2000)).to_dict(),
                   package_version="0.1.0")


def hr_block(spec: RunSpec, shard: int) -> np.ndarray:
    ids = spec.shard_ids(shard)
    rng = np.random.default_rng(shard)
    return rng.random((len(ids), spec.hr_size, spec.hr_size), dtype=np.float32)  # (S, H, W) in [0, 1)


def commit(store: Store, shard: int) -> tuple[np.ndarray, np.ndarray]:
    hr = hr_block(store.spec, shard)
    lr, table = degrade_shard(store.spec, shard, hr, "cpu")
    store.write_shard(shard, hr, lr, table)
    return hr, lr


def test_create_then_open_round_trips_spec_and_layout(tmp_path, spec):
    Store.create(tmp_path / "s.zarr", spec, {"name": "tiny"})
    store = Store.open(tmp_path / "s.zarr")
    assert store.spec == spec and store.attrs["status"] == "planned" and store.attrs["model"]["card"] == {"name": "tiny"}
    assert store.hr.shape == (10, 16, 16) and store.hr.dtype == np.float32 and store.hr.shards == (4, 16, 16)
    assert store.lr.shape == (10, 4, 4) and store.lr.dtype == np.uint16 and store.lr.chunks == (1, 4, 4)
    assert store.num_shards == 3 and store.shard_slice(2) == slice(8, 10)
    assert store.committed_shards() == [] and store.manifest().num_rows == 0
    assert store.manifest().schema.equals(schemas.manifest_schema())


def test_a_shard_is_committed_only_by_its_manifest_part(tmp_path, spec):
    store = Store.create(tmp_path / "s.zarr", spec, {})
    store.hr[0:4] = hr_block(spec, 0)  # array data alone, as a writer killed before its part would leave
    (store.manifest_dir / ".part-000000.parquet.dead.tmp").write_bytes(b"half a file")
    assert store.committed_shards() == []
    hr, lr = commit(store, 2)
    assert store.committed_shards() == [2]
    table = store.manifest()
    assert table.column("sample_id").to_pylist() == [8, 9] and table.column("shard").to_pylist() == [2, 2]
    np.testing.assert_array_equal(store.hr[8:10], hr)
    np.testing.assert_array_equal(store.lr[8:10], lr)
    assert duckdb.sql(f"SELECT count(*) FROM '{store.manifest_glob}'").fetchall() == [(2,)]  # temp file not matched
    assert store.remove_stale_temps() == 1


def test_manifest_columns_carry_units_and_match_the_optics_record(tmp_path, spec):
    store = Store.create(tmp_path / "s.zarr", spec, {})
    commit(store, 0)
    schema = pq.read_schema(store.part_path(0))  # the Parquet file itself, read with no help from factory
    assert schema.field("photons").metadata[b"unit"] == b"photons"
    assert schema.field("psf_sigma_nm").metadata[b"unit"] == b"nm"
    assert schema.field("lr_mean_adu").metadata[b"unit"] == b"ADU"
    assert all(b"description" in f.metadata for f in schema)
    record = DegradationParams().to_record()
    doc = schemas.load("manifest.v1.json")
    assert doc["degradation_columns"] == list(record), "manifest.v1.json must list exactly DegradationParams.to_record()"
    photons = store.manifest(["photons"]).column("photons").to_numpy()
    assert ((photons >= 200) & (photons <= 2000)).all() and len(set(photons)) == 4  # drawn per sample


def test_checksums_recompute_from_stored_bytes_and_catch_a_change(tmp_path, spec):
    store = Store.create(tmp_path / "s.zarr", spec, {})
    for k in range(3):
        commit(store, k)
    m = store.manifest(["sample_id", "hr_checksum", "lr_checksum"]).to_pylist()
    assert [r["sample_id"] for r in m] == list(range(10))
    for r in m:
        i = r["sample_id"]
        assert sample_checksum(store.hr[i]) == r["hr_checksum"] and sample_checksum(store.lr[i]) == r["lr_checksum"]
    lr5 = store.lr[5]
    assert r["lr_checksum"] != sample_checksum(lr5)  # different samples differ
    assert sample_checksum(lr5) == hashlib.blake2b(lr5.astype("<u2").tobytes(), digest_size=16).hexdigest()
    assert sample_checksum(lr5.astype(">u2")) == sample_checksum(lr5)  # defined on values, little-endian
    store.hr[3] = store.hr[3] + np.float32(1e-3)  # silent corruption of one sample
    assert sample_checksum(store.hr[3]) != m[3]["hr_checksum"]


def test_write_refuses_wrong_blocks_and_schemas(tmp_path, spec):
    store = Store.create(tmp_path / "s.zarr", spec, {})
    hr = hr_block(spec, 0)
    lr, table = degrade_shard(spec, 0, hr, "cpu")
    with pytest.raises(FactoryError, match="lacks manifest column 'photons'"):
        store.write_shard(0, hr, lr, table.drop_columns(["photons"]))
    with pytest.raises(FactoryError, match="column 'steps' is int64"):
        store.write_shard(0, hr, lr, table.set_column(table.schema.get_field_index("steps"), "steps",
                                                      pa.array([5] * 4, pa.int64())))
    with pytest.raises(FactoryError, match="expected float32"):
        store.write_shard(0, hr.astype(np.float64), lr, table)
    with pytest.raises(FactoryError, match="sample ids 4..7"):
        store.write_shard(1, hr, lr, table)  # shard 0's rows under shard 1
    assert store.committed_shards() == []


def test_open_refuses_what_is_not_a_readable_store(tmp_path, spec):
    with pytest.raises(FactoryError, match="is not a factory store"):
        Store.open(tmp_path)
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3, attributes={"x": 1})
    with pytest.raises(FactoryError, match="is not a factory store"):
        Store.open(tmp_path / "foreign.zarr")
    Store.create(tmp_path / "s.zarr", spec, {})
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    meta["attributes"]["factory"]["schema_version"] = 2
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FactoryError, match="newer than this factory reads"):
        Store.open(tmp_path / "s.zarr")
    meta["attributes"]["factory"]["schema_version"] = 1
    meta["attributes"]["factory"]["status"] = "half-done"
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FactoryError, match="group_attrs.v1.json at status"):
        Store.open(tmp_path / "s.zarr")


def test_a_part_with_a_foreign_schema_is_refused_on_read(tmp_path, spec):
    store = Store.create(tmp_path / "s.zarr", spec, {})
    commit(store, 0)
    commit(store, 1)
    bad = pq.read_table(store.part_path(1)).drop_columns(["host"])
    pq.write_table(bad, store.part_path(1))
    with pytest.raises(FactoryError, match="part-000001.parquet lacks manifest column 'host'"):
        store.manifest()
    pq.write_table(bad, store.part_path(0))  # the first part is checked on open already
    with pytest.raises(FactoryError, match="part-000000.parquet lacks manifest column 'host'"):
        Store.open(store.path)
    store.part_path(0).write_bytes(b"PAR1 truncated")
    with pytest.raises(FactoryError, match="part-000000.parquet is not a readable Parquet file"):
        Store.open(store.path)
