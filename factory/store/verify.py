"""``factory verify``: is every committed sample intact, is anything missing, duplicated, foreign or left over?

Decodes through zarr-python, independently of the tensorstore path the readers use. Checks:

* metadata a third-party reader needs: the root ``zarr.json`` (factory attrs valid) and each array's and
  image group's own ``zarr.json`` (consolidated metadata can hide a deleted one from zarr, not from this);
* for every committed shard k (manifest part present): the part reads, matches the manifest schema,
  lists exactly the shard's sample ids with ``shard == k``, and every row agrees with the run spec
  (structure id, model, sampler, steps, eta, per-sample seed, pixel sizes): a row of another run is damage;
* the zarr shard file of every data array exists, decodes, and each sample's checksum equals the manifest's;
* the compacted manifest of a complete store equals its parts; smlm emitter parts exist and read;
* across the store: no two samples with identical HR bytes, no parts or zarr shards beyond the planned
  ones, every shard of a ``complete`` store committed.

What an unfinished run leaves (uncommitted shards, data without a marker, temp files) is "incomplete",
fixed by rerunning ``factory generate``; everything else is damage, fixed by ``factory repair STORE``.
"""
from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import zarr

from factory.errors import FactoryError
from factory.seeding import sample_seed
from factory.store import layout, schemas
from factory.store.location import Location
from factory.store.reader import sample_checksum
from factory.store.spec import RunSpec
from factory.store.store import Store, check_attrs, read_parquet


@dataclass(frozen=True)
class Problem:
    kind: str  # damaged | missing | duplicate | extra | foreign | incomplete | stray
    where: str  # "shard 3", "sample 12", a key
    detail: str
    damage: bool = True  # False: what an unfinished, resumable run leaves

    def line(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class Report:
    location: str
    shards_checked: int = 0
    samples_checked: int = 0
    damaged_shards: set[int] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def failures(self, allow_incomplete: bool) -> list[Problem]:
        return [p for p in self.problems if p.damage or not allow_incomplete]

    def notes(self, allow_incomplete: bool) -> list[Problem]:
        return [p for p in self.problems if not p.damage and allow_incomplete]

    def fix(self) -> str:
        """The one command that fixes what was found."""
        if any(p.damage for p in self.problems):
            return f"factory repair {self.location}"
        return "rerun the factory generate command that made it (it resumes)"

    def add(self, problem: Problem, shard: int | None = None) -> None:
        self.problems.append(problem)
        if shard is not None and problem.damage:
            self.damaged_shards.add(shard)


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _expected_columns(spec: RunSpec) -> dict[str, object]:
    """Manifest columns every row must carry, from the run spec (None = not checked for this version)."""
    s = spec.structure
    sampler = s.get("sampler") or {}
    expected = {"model_id": s.get("model_id"), "sampler": sampler.get("kind"), "steps": sampler.get("steps"),
                "hr_pixel_nm": spec.hr_pixel_nm, "lr_pixel_nm": spec.lr_pixel_nm}
    if s["kind"] == "ddpm":
        expected["eta"] = float(sampler.get("eta", 0.0))
    if spec.schema_version >= 2:
        expected.update(structure=s["kind"], structure_id=s["id"])
    return expected


def _check_rows(spec: RunSpec, k: int, table, report: Report) -> bool:
    ids = list(spec.shard_ids(k))
    where = f"shard {k}"
    if table.column("sample_id").to_pylist() != ids:
        report.add(Problem("damaged", where, f"manifest part lists sample ids {table.column('sample_id').to_pylist()[:8]}..., "
                                             f"not {ids[0]}..{ids[-1]}"), k)
        return False
    if set(table.column("shard").to_pylist()) != {k}:
        report.add(Problem("damaged", where, f"manifest part has rows whose shard column is not {k}"), k)
    seeds = table.column("seed").to_pylist()
    if seeds != [sample_seed(spec.seed, i) for i in ids]:
        report.add(Problem("foreign", where, f"manifest seeds are not those of run seed {spec.seed}: rows of another run"), k)
    for column, want in _expected_columns(spec).items():
        got = set(table.column(column).to_pylist())
        if got != {want}:
            report.add(Problem("foreign", where, f"manifest says {column} {sorted(map(str, got))}, the run spec says {want}: "
                                                 f"rows of another run"), k)
    return True


def _root_attrs(loc: Location, report: Report) -> dict | None:
    """The factory attrs: from zarr.json, else (reported as damage) from .factory/run.json."""
    try:
        return json.loads(loc.read_bytes(layout.ROOT_META))["attributes"]["factory"]
    except FileNotFoundError:
        report.add(Problem("missing", layout.ROOT_META, "the store's root metadata is missing"))
    except (ValueError, KeyError, TypeError):
        report.add(Problem("damaged", layout.ROOT_META, "the store's root metadata is unreadable"))
    try:
        return json.loads(loc.read_bytes(layout.RUN_JSON))
    except (FileNotFoundError, ValueError):
        return None


def verify(location: str | Location, on_shard: Callable[[int], None] | None = None) -> Report:
    """Check the whole store; returns every problem found (none: the store is sound)."""
    loc = location if isinstance(location, Location) else Location.parse(location)
    report = Report(str(loc))
    if not loc.exists():
        raise FactoryError(f"{loc}: no such store (nothing at that location).")
    attrs = _root_attrs(loc, report)
    if attrs is None:
        raise FactoryError(f"{loc} is not a factory store (no readable zarr.json or .factory/run.json).")
    check_attrs(loc, attrs)
    store = Store(loc, attrs)
    spec = store.spec
    usable = {}
    for name, array in store.arrays.items():
        keys = [f"{array.path}/zarr.json"] + ([f"{name}/zarr.json"] if array.ome else [])
        lost = [k for k in keys if not loc.exists(k)]
        if lost:
            report.add(Problem("missing", ", ".join(lost), f"metadata of array '{name}' (plain zarr readers cannot open it)"))
            continue
        try:
            usable[name] = store.zarr_array(name)
        except FactoryError as exc:
            report.add(Problem("damaged", f"{array.path}/zarr.json", str(exc).rstrip(".")))
    listed = store.listed_shards()
    n_shards = store.num_shards
    for name in loc.list(layout.MANIFEST_DIR):
        m = layout.PART.match(name)
        if m and int(m.group(1)) >= n_shards:
            report.add(Problem("extra", f"{layout.MANIFEST_DIR}/{name}", f"part of shard {int(m.group(1))}, beyond shards 0..{n_shards - 1}"))
        elif layout.TEMP.match(name):
            report.add(Problem("stray", f"{layout.MANIFEST_DIR}/{name}", "temp file of an interrupted commit", damage=False))
        elif not m:
            report.add(Problem("stray", f"{layout.MANIFEST_DIR}/{name}", "not a manifest part"))
    for name, array in store.arrays.items():
        shards_dir = f"{array.path}/c"
        for entry in loc.list(shards_dir):
            if not entry.isdigit():
                continue
            k = int(entry)
            if k >= n_shards:
                report.add(Problem("extra", f"{shards_dir}/{k}", f"zarr shard beyond the planned shards 0..{n_shards - 1}"))
            elif k not in listed and loc.exists(array.shard_key(k)):
                report.add(Problem("incomplete", f"shard {k}", f"{name} data written but no manifest part "
                                   f"({'its part was lost' if store.complete else 'the commit did not finish'})",
                                   damage=store.complete), k)
    listed_set = set(listed)
    missing_count = n_shards - len(listed_set)  # O(committed) memory, never a list of every planned shard
    if missing_count:
        first = [k for k in itertools.islice((k for k in range(n_shards) if k not in listed_set), 20)]
        shown = ", ".join(map(str, first)) + (", ..." if missing_count > 20 else "")
        if store.complete:
            report.add(Problem("missing", f"{missing_count} shard(s)", f"no manifest part for shards {shown} although the store is marked complete"))
            report.damaged_shards.update(k for k in range(n_shards) if k not in listed_set)
        else:
            report.add(Problem("incomplete", f"{missing_count} shard(s)", f"not committed yet: shards {shown}", damage=False))
    hr_owners: dict[str, list[int]] = defaultdict(list)
    parts = {}
    schema = store.manifest_schema
    for k in listed:
        try:
            table = read_parquet(loc, layout.manifest_part(k), f"manifest part of shard {k}")
            schemas.check_table_schema(table.schema, schema, f"manifest part of shard {k}")
        except FactoryError as exc:
            report.add(Problem("damaged", f"shard {k}", str(exc).split(": ", 1)[-1].rstrip(".")), k)
            report.shards_checked += 1
            continue
        if _check_rows(spec, k, table, report):
            parts[k] = table
            _check_data(store, usable, k, table, report, hr_owners)
            report.samples_checked += table.num_rows
        report.shards_checked += 1
        if on_shard is not None:
            on_shard(k)
    if store.complete and store.version >= 2:
        _check_compacted(store, parts, report)
    for owners in hr_owners.values():
        if len(owners) > 1:
            report.add(Problem("duplicate", f"samples {', '.join(map(str, owners))}", "identical HR images"))
    return report


def _check_data(store: Store, usable: dict[str, zarr.Array], k: int, table, report: Report, hr_owners: dict) -> None:
    sl = store.shard_slice(k)
    for name, array in store.arrays.items():
        if name not in usable:
            continue
        if not store.loc.exists(array.shard_key(k)):
            report.add(Problem("damaged", f"shard {k}", f"{name} data file {array.shard_key(k)} is missing"), k)
            continue
        try:
            block = usable[name][sl]  # (S, ...) one read of the whole zarr shard, through zarr-python
        except Exception as exc:  # corrupt zstd frame, bad shard index checksum, truncated file
            report.add(Problem("damaged", f"shard {k}", f"{name} data does not decode ({_err(exc)})"), k)
            continue
        wanted = table.column(array.checksum_column).to_pylist()
        for i, img, want in zip(range(sl.start, sl.stop), block, wanted):
            if sample_checksum(np.asarray(img), store.version) != want:
                report.add(Problem("damaged", f"sample {i}", f"{name} checksum does not match the manifest"), k)
        if name == "hr":
            for i, want in zip(range(sl.start, sl.stop), wanted):
                hr_owners[want].append(i)
    if store.product == "smlm":
        try:
            emitters = read_parquet(store.loc, layout.emitters_part(k), f"emitter part of shard {k}")
            ids = set(emitters.column("sample_id").to_pylist())
            if not ids <= set(range(sl.start, sl.stop)):
                report.add(Problem("damaged", f"shard {k}", "emitter part lists samples of another shard"), k)
        except FactoryError as exc:
            report.add(Problem("damaged", f"shard {k}", str(exc).split(": ", 1)[-1].rstrip(".")), k)


def _check_compacted(store: Store, parts: dict, report: Report) -> None:
    try:
        compacted = read_parquet(store.loc, layout.COMPACT_MANIFEST, "the compacted manifest")
        schemas.check_table_schema(compacted.schema, store.manifest_schema, "the compacted manifest")
    except FactoryError as exc:
        report.add(Problem("damaged", layout.COMPACT_MANIFEST, str(exc).split(": ", 1)[-1].rstrip(".")))
        return
    if compacted.num_rows != store.n:
        report.add(Problem("damaged", layout.COMPACT_MANIFEST, f"{compacted.num_rows} rows, not {store.n}"))
        return
    for k, part in parts.items():
        sl = store.shard_slice(k)
        rows = compacted.slice(sl.start, sl.stop - sl.start)
        if not _same_rows(rows, part):
            report.add(Problem("damaged", layout.COMPACT_MANIFEST, f"rows of shard {k} differ from its manifest part"), k)


def _same_rows(a, b) -> bool:
    """Equal tables, NaN equal to NaN (a sample without emitters has NaN statistics)."""
    if a.num_rows != b.num_rows or a.column_names != b.column_names:
        return False
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True):
                return False
        elif not x.equals(y):
            return False
    return True
