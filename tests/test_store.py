"""The store package: layout, schemas on write and on open, the exclusive commit marker, checked reads,
the writer lease, the compacted manifest, owned deletes, metadata rebuild, OME-Zarr, layout 1.

Real Zarr v3 and Parquet, on a local folder and on fsspec's memory:// filesystem (the same code path
as object storage: no rename, one PUT per object); manifest rows come from the real pairs stage
(``tasks.pairs_shard``) on synthetic HR blocks, so no Ray is needed here.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from conftest import STORE_V1
from factory.errors import FactoryError
from factory.optics import DegradationConfig, DegradationParams
from factory.pipeline.tasks import pairs_shard
from factory.store import Location, RunSpec, Store, layout, sample_checksum, schemas, writer
from factory.store.lease import Lease, LeaseInfo, check

RUN = "r" * 32


@pytest.fixture
def spec() -> RunSpec:
    """10 samples of 16x16 HR / 4x4 LR in shards of 4 (the last shard holds 2)."""
    structure = {"kind": "ddpm", "id": "ab" * 32, "model_id": "ab" * 32, "model_path": "/nowhere/tiny.safetensors",
                 "sampler": {"kind": "dpmpp", "steps": 5, "eta": 0.0}, "bf16": False}
    return RunSpec(n=10, seed=3, shard_size=4, batch_size=2, product="pairs", structure=structure, hr_size=16, lr_size=4,
                   hr_pixel_nm=20.0, lr_pixel_nm=80.0, degradation=DegradationConfig(photons=(200, 2000)).to_dict(),
                   package_version="0.1.0")


@pytest.fixture(params=["local", "memory"])
def loc(request, tmp_path) -> Location:
    if request.param == "local":
        return Location.parse(tmp_path / "s.zarr")
    return Location.parse(f"memory://{uuid.uuid4().hex}/s.zarr")


def hr_block(spec: RunSpec, shard: int) -> np.ndarray:
    ids = spec.shard_ids(shard)
    return np.random.default_rng(shard).random((len(ids), spec.hr_size, spec.hr_size), dtype=np.float32)  # (S, H, W)


def held(loc: Location) -> Lease:
    return Lease(loc, run_id=RUN).acquire()


def commit(store: Store, shard: int):
    out = pairs_shard(store.spec, shard, hr_block(store.spec, shard), "cpu", RUN)
    writer.commit_shard(store, shard, out.blocks, out.table, RUN)
    return out


def full_store(loc: Location, spec: RunSpec) -> Store:
    held(loc)
    store = writer.create(loc, spec, {"name": "tiny"})
    for k in range(spec.num_shards):
        commit(store, k)
    writer.finalize(store, {"summary": "test"})
    return Store.open(loc)


def test_create_then_open_round_trips_spec_and_layout(loc, spec):
    writer.create(loc, spec, {"name": "tiny"})
    store = Store.open(loc)
    assert store.spec == spec and store.attrs["status"] == "planned" and store.attrs["structure"]["card"] == {"name": "tiny"}
    assert store.hr.shape == (10, 16, 16) and store.hr.dtype == np.float32 and store.hr.shards == (4, 16, 16)
    assert store.lr.shape == (10, 4, 4) and store.lr.dtype == np.uint16 and store.lr.chunks == (1, 4, 4)
    assert store.num_shards == 3 and store.shard_slice(2) == slice(8, 10)
    assert store.committed_shards() == [] and store.manifest().num_rows == 0
    assert json.loads(loc.read_bytes(layout.RUN_JSON))["run_spec"] == spec.to_dict()  # the copy repair rebuilds from
    assert store.arrays["hr"].path == "hr/0" and store.attrs["arrays"]["lr"]["path"] == "lr/0"


def test_hr_and_lr_are_valid_ome_zarr_images_at_their_pixel_size(tmp_path, spec):
    from ome_zarr_models.v05.image import Image

    loc = Location.parse(tmp_path / "s.zarr")
    writer.create(loc, spec, {})
    for name, pixel_nm in (("hr", 20.0), ("lr", 80.0)):
        image = Image.from_zarr(zarr.open_group(str(tmp_path / "s.zarr" / name), mode="r"))  # the independent validator
        ms = image.ome_attributes.multiscales[0]
        assert [a.name for a in ms.axes] == ["sample", "y", "x"] and ms.axes[1].unit == "nanometer"
        assert ms.datasets[0].coordinateTransformations[0].scale == [1.0, pixel_nm, pixel_nm]
    plain = zarr.open_array(str(tmp_path / "s.zarr" / "hr" / "0"), mode="r")  # third-party readers, no factory
    assert plain.shape == (10, 16, 16)


def test_a_shard_is_committed_only_by_its_manifest_part(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    held(loc)
    store = writer.create(loc, spec, {})
    store.hr[0:4] = hr_block(spec, 0)  # array data alone, as a writer killed before its part would leave
    (tmp_path / "s.zarr" / "manifest" / ".part-000000.parquet.dead.tmp").write_bytes(b"half a file")
    assert store.committed_shards() == []
    out = commit(store, 2)
    assert store.committed_shards() == [2]
    table = store.manifest()
    assert table.column("sample_id").to_pylist() == [8, 9] and table.column("shard").to_pylist() == [2, 2]
    np.testing.assert_array_equal(store.read_shard("hr", 2), out.blocks["hr"])
    np.testing.assert_array_equal(store.read_shard("lr", 2), out.blocks["lr"])
    glob = tmp_path / "s.zarr" / "manifest" / "part-*.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall() == [(2,)]  # temp file not matched, no factory needed
    assert writer.remove_stale_temps(loc) == 1


def test_the_marker_is_exclusive_a_recommit_of_the_same_bytes_is_accepted_other_bytes_refused(loc, spec):
    held(loc)
    store = writer.create(loc, spec, {})
    out = commit(store, 1)
    writer.commit_shard(store, 1, out.blocks, out.table, RUN)  # a retried task of this run: same checksums
    other = pairs_shard(spec, 1, hr_block(spec, 1) * 0.5, "cpu", RUN)
    with pytest.raises(FactoryError, match="shard 1 is already committed with other hr data"):
        writer.commit_shard(store, 1, other.blocks, other.table, RUN)
    assert store.manifest_part(1).column("hr_checksum").to_pylist() == out.table.column("hr_checksum").to_pylist()


def test_manifest_columns_carry_units_and_match_the_optics_record(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    held(loc)
    commit(writer.create(loc, spec, {}), 0)
    schema = pq.read_schema(tmp_path / "s.zarr" / "manifest" / "part-000000.parquet")  # the file, read without factory
    assert schema.field("photons").metadata[b"unit"] == b"photons"
    assert schema.field("psf_sigma_nm").metadata[b"unit"] == b"nm"
    assert schema.field("lr_mean_adu").metadata[b"unit"] == b"ADU"
    assert all(b"description" in f.metadata for f in schema)
    doc = schemas.load("manifest.v2.json")
    assert doc["degradation_columns"]["pairs"] == list(DegradationParams().to_record())
    photons = Store.open(loc).manifest(["photons"]).column("photons").to_numpy()
    assert ((photons >= 200) & (photons <= 2000)).all() and len(set(photons)) == 4  # drawn per sample


def test_checksums_recompute_from_stored_bytes(loc, spec):
    store = full_store(loc, spec)
    rows = store.manifest(["sample_id", "hr_checksum", "lr_checksum"]).to_pylist()
    assert [r["sample_id"] for r in rows] == list(range(10))
    for r in rows:
        i = r["sample_id"]
        assert sample_checksum(store.hr[i]) == r["hr_checksum"] and sample_checksum(store.lr[i]) == r["lr_checksum"]
    lr5 = store.lr[5]
    import hashlib

    import xxhash

    assert sample_checksum(lr5) == xxhash.xxh3_128_hexdigest(lr5.astype("<u2").tobytes())  # the documented function
    assert sample_checksum(lr5.astype(">u2")) == sample_checksum(lr5)  # defined on values, little-endian
    assert sample_checksum(lr5, 1) == hashlib.blake2b(lr5.astype("<u2").tobytes(), digest_size=16).hexdigest()  # layout 1


def test_a_complete_store_reads_its_compacted_manifest_equal_to_the_parts(loc, spec):
    store = full_store(loc, spec)
    assert store.complete and loc.exists(layout.COMPACT_MANIFEST)
    parts = pa.concat_tables([pq.read_table(pa.BufferReader(loc.read_bytes(layout.manifest_part(k))))
                              for k in range(3)])
    assert store.manifest().equals(parts)
    loc.delete(layout.manifest_part(1))  # a complete store's readers need no part and no listing
    assert store.committed_shards() == [0, 1, 2] and Store.open(loc).manifest().num_rows == 10


def test_a_flipped_byte_and_a_deleted_shard_file_are_refused_naming_store_shard_and_sample(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    full_store(loc, spec)
    path = tmp_path / "s.zarr" / "hr" / "0" / "c" / "1" / "0" / "0"
    data = bytearray(path.read_bytes())
    data[40] ^= 0x10  # inside the first zstd frame of shard 1
    path.write_bytes(bytes(data))
    for backend in ("tensorstore", "zarr"):
        store = Store.open(loc)
        store._reader = type(store.reader)(store, backend)
        with pytest.raises(FactoryError, match=r"s\.zarr: shard 1: .*(does not decode|sample 4's hr does not match)"):
            store.read_shard("hr", 1)
        np.testing.assert_array_equal(store.read_shard("hr", 0), hr_block(spec, 0))  # the other shards still read
    path.unlink()
    for backend in ("tensorstore", "zarr"):
        store = Store.open(loc)
        store._reader = type(store.reader)(store, backend)
        with pytest.raises(FactoryError, match=r"shard 1: hr .*missing.*factory repair"):
            store.read_shard("hr", 1)


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    loc = Location.parse(tmp_path / "s.zarr")
    first = Lease(loc, ttl_s=30).acquire()
    with pytest.raises(FactoryError, match="is being written by another factory run .* on host"):
        Lease(loc, ttl_s=30).acquire()
    check(loc, first.run_id)
    with pytest.raises(FactoryError, match="no longer written by run"):
        check(loc, "another-run")
    first.release()
    assert not loc.exists(layout.LEASE)
    Lease(loc).acquire()


def test_a_dead_writers_lease_is_taken_over(tmp_path):
    loc = Location.parse(tmp_path / "s.zarr")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = LeaseInfo("old", socket.gethostname(), int(dead.stdout), time.time(), time.time(), 3600.0)
    loc.write_bytes(layout.LEASE, json.dumps(stale.__dict__).encode())  # same host, its process is gone
    Lease(loc).acquire()
    expired = LeaseInfo("old", "another-host", 1, time.time() - 100, time.time() - 100, 60.0)
    loc.write_bytes(layout.LEASE, json.dumps(expired.__dict__).encode())  # another host, not renewed for 100 s > 60 s
    new = Lease(loc).acquire()
    assert json.loads(loc.read_bytes(layout.LEASE))["run_id"] == new.run_id
    alive = LeaseInfo("old", "another-host", 1, time.time(), time.time(), 60.0)
    loc.write_bytes(layout.LEASE, json.dumps(alive.__dict__).encode())
    with pytest.raises(FactoryError, match="another factory run"):
        Lease(loc).acquire()
    new.renew()  # the heartbeat finds another run's lease: this run has lost the store
    assert new.lost and "run old" in new.lost


def test_a_commit_of_a_run_that_lost_the_store_is_refused(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    held(loc)
    store = writer.create(loc, spec, {})
    loc.delete(layout.LEASE)
    Lease(loc, run_id="x" * 32).acquire()  # another run took the store
    out = pairs_shard(spec, 0, hr_block(spec, 0), "cpu", RUN)
    with pytest.raises(FactoryError, match="no longer written by run rrrrrrrr"):
        writer.commit_shard(store, 0, out.blocks, out.table, RUN)
    assert store.listed_shards() == []


def test_delete_owned_keeps_the_users_files(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    full_store(loc, spec)
    (tmp_path / "s.zarr" / "notes.txt").write_text("mine")
    (tmp_path / "s.zarr" / "analysis").mkdir()
    deleted = writer.delete_owned(loc)
    assert {"zarr.json", "hr", "lr", "manifest", "manifest.parquet"} <= set(deleted)
    assert sorted(os.listdir(tmp_path / "s.zarr")) == [".factory", "analysis", "notes.txt"]


def test_lost_root_and_array_metadata_are_rebuilt_without_touching_data(loc, spec):
    store = full_store(loc, spec)
    hr = store.read_shard("hr", 2)
    loc.delete("zarr.json")
    loc.delete("lr/0/zarr.json")
    with pytest.raises(FactoryError, match="lost its root metadata.*factory repair"):
        Store.open(loc)
    assert sorted(writer.rebuild_metadata(loc)) == ["lr metadata", "zarr.json"]
    reopened = Store.open(loc)
    assert reopened.attrs["status"] == "planned" and reopened.listed_shards() == [0, 1, 2]
    np.testing.assert_array_equal(reopened.read_shard("hr", 2), hr)
    np.testing.assert_array_equal(reopened.read_shard("lr", 0), store.read_shard("lr", 0))


def test_commit_refuses_wrong_blocks_and_schemas(loc, spec):
    held(loc)
    store = writer.create(loc, spec, {})
    out = pairs_shard(spec, 0, hr_block(spec, 0), "cpu", RUN)
    with pytest.raises(FactoryError, match="lacks column 'photons'"):
        writer.commit_shard(store, 0, out.blocks, out.table.drop_columns(["photons"]), RUN)
    with pytest.raises(FactoryError, match="column 'steps' is int64"):
        writer.commit_shard(store, 0, out.blocks, out.table.set_column(
            out.table.schema.get_field_index("steps"), "steps", pa.array([5] * 4, pa.int64())), RUN)
    with pytest.raises(FactoryError, match="expected float32"):
        writer.commit_shard(store, 0, {**out.blocks, "hr": out.blocks["hr"].astype(np.float64)}, out.table, RUN)
    with pytest.raises(FactoryError, match="sample ids 4..7"):
        writer.commit_shard(store, 1, out.blocks, out.table, RUN)  # shard 0's rows under shard 1
    assert store.listed_shards() == []


def test_open_refuses_what_is_not_a_readable_store(tmp_path, spec):
    with pytest.raises(FactoryError, match="no such store"):
        Store.open(tmp_path / "absent.zarr")
    with pytest.raises(FactoryError, match="is not a factory store"):
        Store.open(tmp_path)
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3, attributes={"x": 1})
    with pytest.raises(FactoryError, match="is not a factory store"):
        Store.open(tmp_path / "foreign.zarr")
    loc = Location.parse(tmp_path / "s.zarr")
    writer.create(loc, spec, {})
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    meta["attributes"]["factory"]["schema_version"] = 3
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FactoryError, match="newer than this factory reads"):
        Store.open(loc)
    meta["attributes"]["factory"]["schema_version"] = 2
    meta["attributes"]["factory"]["status"] = "half-done"
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FactoryError, match="group_attrs.v2.json at status"):
        Store.open(loc)
    (tmp_path / "s.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(FactoryError, match="not valid JSON.*factory repair"):
        Store.open(loc)


def test_a_part_with_a_foreign_schema_or_garbage_is_refused_on_read(tmp_path, spec):
    loc = Location.parse(tmp_path / "s.zarr")
    held(loc)
    store = writer.create(loc, spec, {})
    commit(store, 0)
    commit(store, 1)
    part = tmp_path / "s.zarr" / "manifest" / "part-000001.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["host"]), part)
    with pytest.raises(FactoryError, match="manifest part of shard 1 lacks column 'host'"):
        store.manifest()
    part.write_bytes(b"PAR1 truncated")
    with pytest.raises(FactoryError, match="part-000001.parquet.*is not a readable Parquet file.*factory repair"):
        store.read_shard("hr", 1)


def test_a_layout_1_store_is_still_read_and_checked():
    store = Store.open(STORE_V1)
    assert store.version == 1 and store.complete and store.arrays["hr"].path == "hr"
    assert store.spec.structure["kind"] == "ddpm" and store.spec.sampler["kind"] == "ddim"
    hr = store.read_shard("hr", 1)  # checked against the version 1 manifest
    assert hr.shape == (2, 16, 16) and store.manifest().schema.equals(schemas.manifest_schema("pairs", 1))
    assert [sample_checksum(x, 1) for x in hr] == store.checksums("hr", 1)
