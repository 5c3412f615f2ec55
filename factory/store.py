"""The factory store: LR/HR pairs in one Zarr v3 group with a Parquet manifest.

    STORE/zarr.json                       root group; attrs["factory"]  (schemas/group_attrs.v1.json)
    STORE/hr/                             (N, H, W) float32, normalized density in [0, 1]
    STORE/lr/                             (N, h, w) uint16, camera ADU
    STORE/manifest/part-{k:06d}.parquet   one row per sample of shard k  (schemas/manifest.v1.json)

Both arrays use the zarr sharding codec: zarr shard = S consecutive samples (the
run's ``shard_size``), inner chunk = 1 sample, zstd. *Store shard k* = zarr shard k
of ``hr`` and of ``lr`` + manifest part k. Writers write whole shards only (two
processes writing inner chunks of one zarr shard lose data), and write the
manifest part last, to a hidden temp name renamed into place: **a shard is
committed iff its manifest part exists**. Readers should only trust samples of
committed shards (:meth:`Store.committed_shards`); a complete store
(``attrs["status"] == "complete"``) has them all.

Reading::

    s = Store.open("pairs.zarr")
    s.hr[i], s.lr[i]                      # (H, W) float32, (h, w) uint16
    s.manifest(["sample_id", "photons"])  # pyarrow.Table, rows in sample_id order
    duckdb.sql(f"SELECT count(*) FROM '{s.manifest_glob}'")
    sample_checksum(s.hr[i]) == row["hr_checksum"]
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import zarr

from factory.errors import FactoryError
from factory.pipeline import schemas
from factory.pipeline.spec import RunSpec

FORMAT = "factory-pairs"
MANIFEST_DIR = "manifest"
_PART = re.compile(r"^part-(\d{6,})\.parquet$")
UNITS = {"hr": "normalized density in [0, 1] (the model's output scale)",
         "lr": "camera ADU (uint16; offset, gain and quantization per the manifest)", "pixel": "nm"}
LAYOUT = {"hr": "hr: (N, H, W) float32; zarr shard = shard_size samples, inner chunk = 1 sample, zstd",
          "lr": "lr: (N, h, w) uint16; same sharding as hr",
          "manifest": "manifest/part-{shard:06d}.parquet; a shard is committed iff its part exists",
          "checksum": schemas.load(f"manifest.v{schemas.SCHEMA_VERSION}.json")["checksum"]}


def sample_checksum(array: np.ndarray) -> str:
    """blake2b-128 hex of one sample as stored: C order, little-endian, in its own dtype (float32 HR, uint16 LR)."""
    a = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()


def tune_zarr_for_shard_writes(shard_size: int) -> None:
    """Process-wide zarr settings for a process that commits whole shards (a commit task).

    One codec thread (commit tasks already run in parallel, one per shard) and all of a
    shard's inner chunks encoded as one batch: on 2 busy cores this halved the time of a
    16-sample shard write (41 -> 20 ms). zarr creates its thread pool on first use, so this
    must run before the process's first zarr I/O to take full effect.
    """
    zarr.config.set({"threading.max_workers": 1, "codec_pipeline.batch_size": int(shard_size)})


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def is_store(path: Path) -> bool:
    """True when ``path`` holds a Zarr group whose attrs mark it as a factory store."""
    try:
        return (Path(path) / "zarr.json").is_file() and \
            zarr.open_group(str(path), mode="r").attrs.get("factory", {}).get("format") == FORMAT
    except Exception:  # unreadable or foreign zarr.json: not ours
        return False


@dataclass
class Store:
    """An open factory store. ``attrs`` is the ``factory`` object of the group attrs."""

    path: Path
    group: zarr.Group
    attrs: dict
    writable: bool = False

    # ----------------------------------------------------------------- open / create
    @classmethod
    def open(cls, path: str | Path, writable: bool = False) -> "Store":
        """Open and validate a store; one FactoryError sentence when it is not one this version can read."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise FactoryError(f"{path} is not a factory store (no zarr.json).")
        try:
            group = zarr.open_group(str(path), mode="r+" if writable else "r", zarr_format=3)
        except Exception as exc:
            raise FactoryError(f"{path} is not a factory store (unreadable Zarr v3 group: {type(exc).__name__}).") from None
        attrs = group.attrs.asdict().get("factory")
        if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
            raise FactoryError(f"{path} is not a factory store (its Zarr group attrs have no factory section).")
        version = attrs.get("schema_version")
        if isinstance(version, int) and version > schemas.SCHEMA_VERSION:
            raise FactoryError(f"{path} was written with store schema version {version}, newer than this factory "
                               f"reads ({schemas.SCHEMA_VERSION}); upgrade factory.")
        schemas.validate(attrs, f"group_attrs.v{schemas.SCHEMA_VERSION}.json", f"{path} group attrs")
        store = cls(path, group, attrs, writable)
        store._check_arrays()
        committed = store.committed_shards()
        if committed:  # one footer read: a store of another manifest version fails here, not mid-training
            part = store.part_path(committed[0])
            try:
                schema = pq.read_schema(part)
            except Exception as exc:  # pyarrow raises several types for truncated / non-Parquet files
                raise FactoryError(f"{part} is not a readable Parquet file ({type(exc).__name__}).") from None
            schemas.check_manifest_schema(schema, str(part))
        return store

    @classmethod
    def create(cls, path: str | Path, spec: RunSpec, model_card: dict) -> "Store":
        """Plan a new store: group attrs (status planned, the run spec) first, then the empty arrays."""
        path = Path(path)
        spec.validate()
        attrs = {"format": FORMAT, "schema_version": schemas.SCHEMA_VERSION, "status": "planned",
                 "run_spec": spec.to_dict(), "model": {"id": spec.model_id, "card": model_card},
                 "hr_pixel_nm": spec.hr_pixel_nm, "lr_pixel_nm": spec.lr_pixel_nm, "units": UNITS, "layout": LAYOUT,
                 "created_at": now_utc().isoformat(), "totals": None, "card": None}
        schemas.validate(attrs, f"group_attrs.v{schemas.SCHEMA_VERSION}.json", "new group attrs")
        group = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes={"factory": attrs})
        S = spec.shard_size
        for name, side, dtype, pixel_nm in (("hr", spec.hr_size, "float32", spec.hr_pixel_nm),
                                            ("lr", spec.lr_size, "uint16", spec.lr_pixel_nm)):
            group.create_array(name, shape=(spec.n, side, side), dtype=dtype, chunks=(1, side, side),
                               shards=(S, side, side), compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0,
                               dimension_names=("sample", "y", "x"),
                               attributes={"unit": UNITS[name], "pixel_nm": pixel_nm})
        (path / MANIFEST_DIR).mkdir()
        return cls(path, group, attrs, writable=True)

    def _check_arrays(self) -> None:
        s = self.spec
        for name, side, dtype in (("hr", s.hr_size, np.float32), ("lr", s.lr_size, np.uint16)):
            try:
                arr = self.group[name]
            except KeyError:
                raise FactoryError(f"{self.path} is a corrupt factory store: array '{name}' is missing.") from None
            if arr.shape != (s.n, side, side) or arr.dtype != dtype or arr.shards != (s.shard_size, side, side):
                raise FactoryError(f"{self.path} is a corrupt factory store: array '{name}' is {arr.dtype} {arr.shape} "
                                   f"sharded {arr.shards}, its run spec says {np.dtype(dtype)} {(s.n, side, side)}.")

    # ----------------------------------------------------------------- what is in it
    @cached_property
    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.attrs["run_spec"])

    @cached_property
    def hr(self) -> zarr.Array:
        """(N, H, W) float32 normalized density; read samples of committed shards only."""
        return self.group["hr"]

    @cached_property
    def lr(self) -> zarr.Array:
        """(N, h, w) uint16 camera ADU."""
        return self.group["lr"]

    @property
    def n(self) -> int:
        return self.spec.n

    @property
    def shard_size(self) -> int:
        return self.spec.shard_size

    @property
    def num_shards(self) -> int:
        return self.spec.num_shards

    @property
    def complete(self) -> bool:
        return self.attrs["status"] == "complete"

    def shard_slice(self, shard: int) -> slice:
        """Sample ids of shard k as a slice of axis 0: [k*S, min((k+1)*S, N))."""
        if not 0 <= shard < self.num_shards:
            raise FactoryError(f"shard {shard} is out of range: the store has shards 0..{self.num_shards - 1}.")
        ids = self.spec.shard_ids(shard)
        return slice(ids.start, ids.stop)

    @property
    def manifest_dir(self) -> Path:
        return self.path / MANIFEST_DIR

    @property
    def manifest_glob(self) -> str:
        """Path glob of the committed manifest parts, e.g. for ``duckdb.sql(f"SELECT * FROM '{glob}'")``."""
        return str(self.manifest_dir / "part-*.parquet")

    def part_path(self, shard: int) -> Path:
        return self.manifest_dir / f"part-{shard:06d}.parquet"

    def committed_shards(self) -> list[int]:
        """Shards whose manifest part exists (the commit marker), sorted."""
        if not self.manifest_dir.is_dir():
            return []
        found = (_PART.match(name) for name in os.listdir(self.manifest_dir))
        return sorted(k for k in (int(m.group(1)) for m in found if m) if k < self.num_shards)

    def manifest(self, columns: list[str] | None = None) -> pa.Table:
        """The manifest rows of all committed shards, in sample_id order; every part is checked against the schema."""
        schema = schemas.manifest_schema()
        unknown = [c for c in columns or [] if c not in schema.names]
        if unknown:
            raise FactoryError(f"no manifest column {', '.join(map(repr, unknown))}; columns are: {', '.join(schema.names)}.")
        paths = [str(self.part_path(k)) for k in self.committed_shards()]
        if not paths:
            table = schema.empty_table()
            return table.select(columns) if columns else table
        dataset = pads.dataset(paths, schema=schema, format="parquet")
        for fragment in dataset.get_fragments():
            schemas.check_manifest_schema(fragment.physical_schema, fragment.path)
        return dataset.to_table(columns=columns)

    # ----------------------------------------------------------------- writing (pipeline only)
    def write_shard(self, shard: int, hr: np.ndarray, lr: np.ndarray, table: pa.Table) -> None:
        """Commit shard k: whole zarr shards of hr and lr, then the manifest part via temp name + os.replace."""
        sl = self.shard_slice(shard)
        count = sl.stop - sl.start
        s = self.spec
        if hr.shape != (count, s.hr_size, s.hr_size) or hr.dtype != np.float32:
            raise FactoryError(f"shard {shard}: HR block is {hr.dtype} {hr.shape}, expected float32 {(count, s.hr_size, s.hr_size)}.")
        if lr.shape != (count, s.lr_size, s.lr_size) or lr.dtype != np.uint16:
            raise FactoryError(f"shard {shard}: LR block is {lr.dtype} {lr.shape}, expected uint16 {(count, s.lr_size, s.lr_size)}.")
        schemas.check_manifest_schema(table.schema, f"manifest part of shard {shard}")
        if table.column("sample_id").to_pylist() != list(range(sl.start, sl.stop)):
            raise FactoryError(f"manifest part of shard {shard} does not list sample ids {sl.start}..{sl.stop - 1} in order.")
        self.hr[sl] = hr  # (count, H, W): every inner chunk of zarr shard k
        self.lr[sl] = lr  # (count, h, w)
        final = self.part_path(shard)
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")  # hidden, not matched by part-*.parquet
        pq.write_table(table.cast(schemas.manifest_schema()), tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def set_attrs(self, **changes) -> None:
        """Update the factory attrs (driver only), validated before they are written."""
        attrs = {**self.attrs, **changes}
        schemas.validate(attrs, f"group_attrs.v{schemas.SCHEMA_VERSION}.json", "group attrs")
        self.group.attrs["factory"] = attrs
        self.attrs = attrs

    def remove_stale_temps(self) -> int:
        """Delete manifest temp files left by a killed writer; returns how many."""
        stale = list(self.manifest_dir.glob(".part-*.tmp"))
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def stored_bytes(self) -> int:
        """Bytes on disk of the data: the hr and lr arrays and the manifest parts (not the root zarr.json)."""
        return sum(p.stat().st_size for d in ("hr", "lr", MANIFEST_DIR) for p in (self.path / d).rglob("*") if p.is_file())
