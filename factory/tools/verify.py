"""``factory verify``: is every committed sample intact, and is anything missing, duplicated or left over?

For every committed shard k (manifest part present), in order:

1. the manifest part reads, matches the manifest schema, and lists exactly the shard's sample
   ids (k*S .. min((k+1)*S, N) - 1) with ``shard == k``;
2. the zarr shard files ``hr/c/k/0/0`` and ``lr/c/k/0/0`` exist, decode (a read of the whole
   shard; corrupt bytes may fail to decode, which is damage too), and every sample's
   :func:`factory.store.sample_checksum` equals its ``hr_checksum`` / ``lr_checksum``.

Across the store: no sample id twice, no two samples with identical HR bytes (every sample has its
own noise, so equal HR means a copy), no parts or zarr shards beyond the planned ones, shards of a
``complete`` store all committed. What an interrupted (resumable) run leaves — uncommitted shards,
zarr data without a manifest part, hidden ``.part-*.tmp`` files — is reported too; with
``allow_incomplete`` those are notes, not failures.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from factory.errors import FactoryError
from factory.pipeline import schemas
from factory.store import MANIFEST_DIR, Store, sample_checksum

_PART = re.compile(r"^part-(\d{6,})\.parquet$")
_TEMP = re.compile(r"^\.part-\d{6,}\.parquet\..*\.tmp$")
ARRAYS = ("hr", "lr")


@dataclass(frozen=True)
class Problem:
    kind: str  # damaged | missing | duplicate | extra | uncommitted | stray
    where: str  # "shard 3", "sample 12", a path
    detail: str
    damage: bool = True  # False: what an interrupted, resumable run leaves (tolerated with allow_incomplete)

    def line(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class Report:
    store: Path
    shards_checked: int = 0
    samples_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    def failures(self, allow_incomplete: bool) -> list[Problem]:
        return [p for p in self.problems if p.damage or not allow_incomplete]

    def notes(self, allow_incomplete: bool) -> list[Problem]:
        return [p for p in self.problems if not p.damage and allow_incomplete]


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def shard_file(store: Store, array: str, shard: int) -> Path:
    """The zarr shard file of store shard k (default chunk key encoding ``c/k/0/0``)."""
    return store.path / array / "c" / str(shard) / "0" / "0"


def _check_part(store: Store, k: int, report: Report):
    """The part's table when it is sound, else None (problems appended)."""
    where = f"shard {k}"
    path = store.part_path(k)
    try:
        table = pq.read_table(path)
        schemas.check_manifest_schema(table.schema, f"manifest part {path.name}")
    except FactoryError as exc:
        report.problems.append(Problem("damaged", where, str(exc).rstrip(".")))
        return None
    except Exception as exc:  # truncated or garbled Parquet
        report.problems.append(Problem("damaged", where, f"manifest part {path.name} is unreadable ({_err(exc)})"))
        return None
    ids = list(store.spec.shard_ids(k))
    if table.column("sample_id").to_pylist() != ids:
        report.problems.append(Problem("damaged", where, f"manifest part lists sample ids {table.column('sample_id').to_pylist()[:8]}..., "
                                                         f"not {ids[0]}..{ids[-1]}"))
    if set(table.column("shard").to_pylist()) != {k}:
        report.problems.append(Problem("damaged", where, "manifest part has rows whose shard column is not " + str(k)))
    return table


def _check_data(store: Store, k: int, table, report: Report, hr_owners: dict) -> None:
    sl = store.shard_slice(k)
    for name in ARRAYS:
        if not shard_file(store, name, k).is_file():
            report.problems.append(Problem("damaged", f"shard {k}", f"{name} data file {name}/c/{k}/0/0 is missing"))
            continue
        try:
            block = getattr(store, name)[sl]  # (S, ...) one read of the whole zarr shard
        except Exception as exc:  # corrupt zstd frame, bad shard index checksum, truncated file
            report.problems.append(Problem("damaged", f"shard {k}", f"{name} data does not decode ({_err(exc)})"))
            continue
        wanted = table.column(f"{name}_checksum").to_pylist()
        bad = [i for i, img, want in zip(range(sl.start, sl.stop), block, wanted) if sample_checksum(img) != want]
        for i in bad:
            report.problems.append(Problem("damaged", f"sample {i}", f"{name} checksum does not match the manifest"))
        if name == "hr":
            for i, want in zip(range(sl.start, sl.stop), wanted):
                hr_owners[want].append(i)


def _listed_indices(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = pattern.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return found


def verify(store: Store, on_shard: Callable[[int], None] | None = None) -> Report:
    """Check the whole store; returns every problem found (none: the store is sound)."""
    report = Report(store.path)
    committed = set(store.committed_shards())
    n_shards = store.num_shards
    manifest_dir = store.path / MANIFEST_DIR
    for k, p in sorted(_listed_indices(manifest_dir, _PART).items()):
        if k >= n_shards:
            report.problems.append(Problem("extra", str(p.relative_to(store.path)), f"part of shard {k}, but the store plans shards 0..{n_shards - 1}"))
    if manifest_dir.is_dir():
        for p in sorted(manifest_dir.iterdir()):
            if _TEMP.match(p.name):
                report.problems.append(Problem("stray", str(p.relative_to(store.path)), "temp file of an interrupted commit (generate removes it when resuming)", damage=False))
            elif not _PART.match(p.name):
                report.problems.append(Problem("stray", str(p.relative_to(store.path)), "not a manifest part"))
    for name in ARRAYS:
        for k in sorted(int(d.name) for d in (store.path / name / "c").glob("*") if d.name.isdigit()):
            if k >= n_shards:
                report.problems.append(Problem("extra", f"{name}/c/{k}", f"zarr shard beyond the planned shards 0..{n_shards - 1}"))
            elif k not in committed and shard_file(store, name, k).is_file():
                report.problems.append(Problem("uncommitted", f"shard {k}", f"{name} data written but no manifest part "
                                               f"({'its part was lost' if store.complete else 'the commit did not finish'})",
                                               damage=store.complete))
    missing = sorted(set(range(n_shards)) - committed)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        if store.complete:
            report.problems.append(Problem("missing", f"{len(missing)} shard(s)", f"no manifest part for shards {shown} although the store is marked complete"))
        else:
            report.problems.append(Problem("uncommitted", f"{len(missing)} shard(s)", f"not committed yet: shards {shown} (status {store.attrs['status']}; rerun generate to finish)", damage=False))
    hr_owners: dict[str, list[int]] = defaultdict(list)
    for k in sorted(committed):
        table = _check_part(store, k, report)
        if table is not None:
            _check_data(store, k, table, report, hr_owners)
            report.samples_checked += table.num_rows
        report.shards_checked += 1
        if on_shard is not None:
            on_shard(k)
    for owners in hr_owners.values():
        if len(owners) > 1:
            report.problems.append(Problem("duplicate", f"samples {', '.join(map(str, owners))}", "identical HR images"))
    return report
