"""Nothing damaged reaches training, nothing is lost: the damaged-store matrix.

One real store (the real generate on a real local Ray, the tiny model), copied and damaged one way per
case: a flipped data byte, a flipped shard-index byte, a deleted shard file, a truncated manifest part,
a garbage part, a deleted part, the deleted root zarr.json, a deleted array zarr.json. Against each:
the PyTorch dataset raises one FactoryError naming store and shard (or works, where the damage is
metadata that readers do not trust anyway), ``export`` and ``preview`` exit 2 with one sentence,
``verify`` exits 1 naming the damage and ``factory repair STORE``, and ``repair`` makes the store
verify again with every byte equal to the original's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import flip_byte
from factory.cli import app
from factory.data import DataConfig, PairDataset
from factory.errors import FactoryError
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Store
from factory.structures import StructureConfig

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def original(ray_local, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("orig") / "orig.zarr"
    source = StructureConfig(model=str(tiny_model), sampler={"kind": "ddim", "steps": 3, "eta": 0.0})
    result = generate(GenerateConfig(n=8, out=out, structure=source, batch_size=2, shard_size=4, seed=5, hr_size=16),
                      ClusterConfig(workers=2))
    assert result.status == "complete"
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


DAMAGE = {  # name -> (what to do to the copy, a shard the damage hits or None for metadata)
    "flipped data byte": (lambda s: flip_byte(s / "hr" / "0" / "c" / "1" / "0" / "0", 40), 1),
    "flipped index byte": (lambda s: flip_byte(s / "lr" / "0" / "c" / "0" / "0" / "0", -8, 0xFF), 0),
    "deleted shard file": (lambda s: (s / "hr" / "0" / "c" / "1" / "0" / "0").unlink(), 1),
    "truncated part": (lambda s: truncate(s / "manifest" / "part-000001.parquet"), 1),
    "garbage part": (lambda s: (s / "manifest" / "part-000000.parquet").write_bytes(b"PAR1 not parquet PAR1"), 0),
    "deleted part": (lambda s: (s / "manifest" / "part-000000.parquet").unlink(), 0),
    "deleted root metadata": (lambda s: (s / "zarr.json").unlink(), None),
    "deleted array metadata": (lambda s: (s / "hr" / "0" / "zarr.json").unlink(), None),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_refused_by_readers_reported_by_verify_and_undone_by_repair(damage, original, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(original, copy)
    hurt, shard = DAMAGE[damage]
    hurt(copy)
    store_level = shard is None or damage in ("truncated part", "garbage part", "deleted part")

    if shard is not None and not store_level:  # data damage: the dataset refuses the shard, naming it
        with pytest.raises(FactoryError, match=rf"copy\.zarr: shard {shard}: .*factory repair"):
            list(PairDataset(DataConfig(copy, shuffle=False)))
    elif damage in ("deleted root metadata", "deleted array metadata"):
        with pytest.raises(FactoryError, match="factory repair"):
            PairDataset(DataConfig(copy))
    for args in (["export", copy, "--format", "tiff", "--out", tmp_path / "x"], ["preview", copy, "--out", tmp_path / "p.png"]):
        r = run(*args)
        if damage == "deleted part" or damage in ("truncated part", "garbage part"):
            # a complete store reads its compacted manifest: the lost or damaged part is a verify finding,
            # the samples themselves are intact and checked
            assert r.exit_code == 0, (damage, r.output)
        else:
            assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output, (damage, r.output)
    r = run("verify", copy)
    assert r.exit_code == 1 and "DAMAGED" in r.output and f"to fix: factory repair {copy}" in r.output, r.output

    r = run("repair", copy)
    assert r.exit_code == 0, r.output
    assert run("verify", copy).exit_code == 0
    a, b = Store.open(original), Store.open(copy)
    assert b.complete and b.manifest().drop_columns(["created_at", "host", "run_id"]).equals(
        a.manifest().drop_columns(["created_at", "host", "run_id"]))
    for name in ("hr", "lr"):
        for k in range(a.num_shards):
            np.testing.assert_array_equal(b.read_shard(name, k), a.read_shard(name, k))
            assert (copy / name / "0" / "c" / str(k) / "0" / "0").read_bytes() == \
                (original / name / "0" / "c" / str(k) / "0" / "0").read_bytes()  # byte-identical files


def test_repair_of_a_sound_store_does_nothing_and_dry_run_changes_nothing(original, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(original, copy)
    r = run("repair", copy)
    assert r.exit_code == 0 and "is sound; nothing to repair" in r.output
    flip_byte(copy / "lr" / "0" / "c" / "1" / "0" / "0", 30)
    before = (copy / "lr" / "0" / "c" / "1" / "0" / "0").read_bytes()
    r = run("repair", copy, "--dry-run")
    assert r.exit_code == 0 and "would regenerate 1 shard(s) (1)" in r.output
    assert (copy / "lr" / "0" / "c" / "1" / "0" / "0").read_bytes() == before


def test_a_foreign_row_is_found_by_verify(original, tmp_path):
    """A part made by another run (here: other sampler steps) in this store is damage, not OK."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "copy.zarr"
    shutil.copytree(original, copy)
    part = copy / "manifest" / "part-000001.parquet"
    table = pq.read_table(part)
    table = table.set_column(table.schema.get_field_index("steps"), table.schema.field("steps"),
                             pa.array([30] * table.num_rows, pa.int32()))
    pq.write_table(table, part)
    r = run("verify", copy)
    assert r.exit_code == 1 and "foreign: shard 1: manifest says steps ['30'], the run spec says 3" in r.output


def test_a_never_run_planned_store_is_incomplete_not_damaged(tmp_path, tiny_model):
    from factory.pipeline import plan as planning
    from factory.store import Location
    from factory.store.lease import Lease

    source = StructureConfig(model=str(tiny_model), sampler={"kind": "ddim", "steps": 3, "eta": 0.0})
    spec, card = planning.resolve(GenerateConfig(n=8, out=tmp_path / "p.zarr", structure=source, shard_size=4, hr_size=16))
    loc = Location.parse(tmp_path / "p.zarr")
    with Lease(loc):
        planning.prepare(loc, spec, card, overwrite=False)
    r = run("verify", tmp_path / "p.zarr")
    assert r.exit_code == 1 and "INCOMPLETE" in r.output and "DAMAGED" not in r.output
    assert run("verify", tmp_path / "p.zarr", "--allow-incomplete").exit_code == 0


def test_third_party_readers_need_every_array_metadata_and_verify_checks_it(original, tmp_path):
    """Consolidated metadata can hide a deleted array zarr.json from zarr; verify reads what plain readers read."""
    import zarr

    copy = tmp_path / "copy.zarr"
    shutil.copytree(original, copy)
    assert "consolidated_metadata" in json.loads((copy / "zarr.json").read_text())
    (copy / "lr" / "zarr.json").unlink()  # the OME image group of lr
    r = run("verify", copy)
    assert r.exit_code == 1 and "missing: lr/zarr.json" in r.output
    with pytest.raises(Exception):
        zarr.open_group(str(copy / "lr"), mode="r", use_consolidated=False)
