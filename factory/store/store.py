"""An open factory store: its run spec, its arrays, its committed shards, its manifest, checked reads.

    s = Store.open("pairs.zarr")                 # or "s3://bucket/pairs.zarr", "memory://x.zarr"
    s.read_shard("hr", k)                        # (count, H, W) float32, every sample checked against the manifest
    s.read_samples("lr", ids)                    # (len(ids), h, w) uint16, checked, any ids of committed shards
    s.manifest(["sample_id", "photons"])         # pyarrow.Table in sample_id order (compacted file when complete)
    s.hr[i], s.lr[i]                             # the raw zarr arrays (unchecked: what a third-party reader sees)

A shard is committed iff its manifest part exists (``layout.manifest_part(k)``); a complete store has
them all. Writing is :mod:`factory.store.writer`'s (create, commit, finalize, repair helpers), by the
one run that holds the store's lease (:mod:`factory.store.lease`).
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from factory.errors import FactoryError
from factory.store import layout, schemas
from factory.store.layout import ArraySpec
from factory.store.location import Location
from factory.store.reader import ShardReader
from factory.store.spec import RunSpec

FORMATS = {1: "factory-pairs", 2: "factory-store"}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def is_store(location: str | Location) -> bool:
    """True when ``location`` holds a Zarr group whose attrs mark it as a factory store."""
    loc = location if isinstance(location, Location) else Location.parse(location)
    try:
        attrs = json.loads(loc.read_bytes(layout.ROOT_META)).get("attributes", {}).get("factory", {})
        return attrs.get("format") in FORMATS.values()
    except Exception:  # unreadable, foreign or missing zarr.json: not ours
        return False


PART_READERS = 16  # manifest parts read at once by an incomplete store's manifest()


def read_parquet(loc: Location, key: str, what: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet object of the store as a table; one FactoryError sentence when it is missing or unreadable."""
    try:
        return pq.ParquetFile(pa.BufferReader(loc.read_bytes(key))).read(columns=columns)  # 1.7x read_table (no dataset layer)
    except FileNotFoundError:
        raise FactoryError(f"{loc}: {what} ({key}) is missing.") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FactoryError(f"{loc}: {what} ({key}) is not a readable Parquet file ({type(exc).__name__}); "
                           f"`factory repair {loc}` regenerates it.") from None


def check_attrs(loc: Location, attrs) -> None:
    """The factory attrs are of a store format and version this package reads, and valid: else one sentence."""
    if not isinstance(attrs, dict) or attrs.get("format") not in FORMATS.values():
        raise FactoryError(f"{loc} is not a factory store (its Zarr group attrs have no factory section).")
    version = attrs.get("schema_version")
    if isinstance(version, int) and version > schemas.SCHEMA_VERSION:
        raise FactoryError(f"{loc} was written with store schema version {version}, newer than this factory "
                           f"reads ({schemas.SCHEMA_VERSION}); upgrade factory.")
    if version not in schemas.READABLE_VERSIONS or attrs["format"] != FORMATS[version]:
        raise FactoryError(f"{loc} has an unknown store format {attrs.get('format')!r} version {version!r}.")
    schemas.validate(attrs, f"group_attrs.v{version}.json", f"{loc} group attrs")


class Store:
    """An open store (see the module docstring). ``attrs`` is the ``factory`` object of the root group's attrs."""

    def __init__(self, loc: Location, attrs: dict, writable: bool = False):
        self.loc, self.attrs, self.writable = loc, attrs, writable
        self.spec = RunSpec.from_dict(attrs["run_spec"])
        self.arrays: dict[str, ArraySpec] = {a.name: a for a in layout.data_arrays(self.spec)}
        self._zarr: dict[str, zarr.Array] = {}
        self._checksum_columns: dict[str, list[str]] = {}
        self._reader: ShardReader | None = None

    # ----------------------------------------------------------------- open
    @classmethod
    def open(cls, location: str | Location, writable: bool = False) -> "Store":
        """Open and validate a store; one FactoryError sentence when it is not one this version can read."""
        loc = location if isinstance(location, Location) else Location.parse(location)
        try:
            raw = loc.read_bytes(layout.ROOT_META)
        except FileNotFoundError:
            if loc.exists(layout.RUN_JSON):
                raise FactoryError(f"{loc} lost its root metadata (zarr.json) but keeps its run spec; "
                                   f"`factory repair {loc}` rebuilds it.") from None
            if not loc.exists():
                raise FactoryError(f"{loc}: no such store (nothing at that location).") from None
            raise FactoryError(f"{loc} is not a factory store (no zarr.json).") from None
        try:
            meta = json.loads(raw)
            attrs = meta.get("attributes", {}).get("factory")
        except (ValueError, AttributeError):
            raise FactoryError(f"{loc} is not a factory store (its zarr.json is not valid JSON); "
                               f"if it was one, `factory repair {loc}` rebuilds it.") from None
        check_attrs(loc, attrs)
        store = cls(loc, attrs, writable)
        for name in store.arrays:
            store.zarr_array(name)  # every array's own metadata must be there (not only the consolidated copy)
        committed = store.committed_shards()
        if committed and not store.complete:  # one footer read: another manifest version fails here, not mid-training
            store.manifest_part(committed[0], ["sample_id"])
        return store

    # ----------------------------------------------------------------- what is in it
    @property
    def version(self) -> int:
        return int(self.attrs["schema_version"])

    @property
    def product(self) -> str:
        return self.spec.product

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

    @property
    def manifest_schema(self) -> pa.Schema:
        return schemas.manifest_schema(self.product, self.version)

    def shard_slice(self, shard: int) -> slice:
        """Sample ids of shard k as a slice of axis 0: [k*S, min((k+1)*S, N))."""
        if not 0 <= shard < self.num_shards:
            raise FactoryError(f"shard {shard} is out of range: the store has shards 0..{self.num_shards - 1}.")
        ids = self.spec.shard_ids(shard)
        return slice(ids.start, ids.stop)

    def zarr_array(self, name: str) -> zarr.Array:
        """The raw zarr array (unchecked reads: use :meth:`read_shard` for data you train on)."""
        if name not in self._zarr:
            array = self.arrays[name]
            try:
                arr = zarr.open_array(self.loc.zarr_store(read_only=not self.writable), path=array.path, zarr_format=3,
                                      mode="r+" if self.writable else "r").with_config(layout.ARRAY_CONFIG)
            except Exception:
                raise FactoryError(f"{self.loc} is damaged: the metadata of array '{name}' ({array.path}/zarr.json) is "
                                   f"missing or unreadable; `factory repair {self.loc}` rebuilds it.") from None
            shape, S = (self.n, *array.sample_shape), self.shard_size
            if arr.shape != shape or arr.dtype != np.dtype(array.dtype) or (arr.shards or arr.chunks)[0] != S:
                raise FactoryError(f"{self.loc} is a corrupt factory store: array '{name}' is {arr.dtype} {arr.shape} "
                                   f"sharded {arr.shards}, its run spec says {array.dtype} {shape} in shards of {S}.")
            self._zarr[name] = arr
        return self._zarr[name]

    @property
    def hr(self) -> zarr.Array:
        return self.zarr_array("hr")

    @property
    def lr(self) -> zarr.Array:
        return self.zarr_array("lr")

    # ----------------------------------------------------------------- commit markers and the manifest
    def listed_shards(self) -> list[int]:
        """Shards whose manifest part exists (one LIST of ``manifest/``), sorted."""
        found = (layout.PART.match(name) for name in self.loc.list(layout.MANIFEST_DIR))
        return sorted(k for k in (int(m.group(1)) for m in found if m) if k < self.num_shards)

    def committed_shards(self) -> list[int]:
        """Committed shards: all of a complete store (no listing needed), else those with a manifest part."""
        return list(range(self.num_shards)) if self.complete else self.listed_shards()

    def manifest_part(self, shard: int, columns: list[str] | None = None) -> pa.Table:
        """Shard k's manifest rows (from the compacted manifest when the store is complete), schema-checked."""
        if self.complete and self.version >= 2:
            table = self.manifest(columns)
            sl = self.shard_slice(shard)
            return table.slice(sl.start, sl.stop - sl.start)
        table = read_parquet(self.loc, layout.manifest_part(shard), f"the manifest part of shard {shard}")
        schemas.check_table_schema(table.schema, self.manifest_schema, f"{self.loc} manifest part of shard {shard}")
        return table.select(columns) if columns else table

    @cached_property
    def _compacted(self) -> pa.Table:
        table = read_parquet(self.loc, layout.COMPACT_MANIFEST, "the compacted manifest")
        schemas.check_table_schema(table.schema, self.manifest_schema, f"{self.loc} compacted manifest")
        if table.num_rows != self.n:
            raise FactoryError(f"{self.loc}: the compacted manifest has {table.num_rows} rows, not {self.n}; "
                               f"`factory repair {self.loc}` rebuilds it.")
        return table

    def manifest(self, columns: list[str] | None = None) -> pa.Table:
        """Manifest rows of all committed shards in sample_id order; every part is checked against the schema."""
        schema = self.manifest_schema
        unknown = [c for c in columns or [] if c not in schema.names]
        if unknown:
            raise FactoryError(f"no manifest column {', '.join(map(repr, unknown))}; columns are: {', '.join(schema.names)}.")
        if self.complete and self.version >= 2:
            return self._compacted.select(columns) if columns else self._compacted
        shards = self.committed_shards()
        with ThreadPoolExecutor(max_workers=max(1, min(PART_READERS, len(shards)))) as pool:
            parts = list(pool.map(self.manifest_part, shards))  # Parquet decode and object GETs release the GIL
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        return table.select(columns) if columns else table

    def run_arrays(self, group: str) -> dict[str, np.ndarray]:
        """The run-level arrays under ``group`` (e.g. ``camera``: sCMOS maps), by name; {} when there are none."""
        if not self.loc.exists(f"{group}/zarr.json") and not self.loc.isdir(group):
            return {}
        try:
            node = zarr.open_group(self.loc.zarr_store(read_only=True), path=group, mode="r", zarr_format=3)
            return {name: node[name][...] for name in node.array_keys()}
        except Exception:
            raise FactoryError(f"{self.loc}: the run arrays under {group}/ are unreadable (damaged store).") from None

    def read_table(self, key: str, what: str) -> pa.Table | None:
        """A side table of the store (e.g. ``layout.AUDIT_FILE``), None when it does not exist."""
        if not self.loc.exists(key):
            return None
        return read_parquet(self.loc, key, what)

    def write_table(self, key: str, table: pa.Table, overwrite: bool = False) -> str:
        """Write a side table (not a commit marker) atomically; returns its URL. Refuses to replace one unless asked."""
        if self.loc.exists(key) and not overwrite:
            raise FactoryError(f"{self.loc.url_of(key)} already exists; pass --overwrite to replace it.")
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.loc.write_bytes(key, buf.getvalue())
        return self.loc.url_of(key)

    def emitters_dataset(self):
        """smlm: every committed shard's emitters, as a pyarrow dataset DuckDB scans lazily (local folders) or one
        table read part by part through the store (object storage)."""
        import pyarrow.dataset as pads

        schema = schemas.table_schema("emitters.v1.json")
        shards = self.committed_shards()
        if self.loc.local:
            return pads.dataset([self.loc.path(layout.emitters_part(k)) for k in shards], format="parquet", schema=schema)
        return pa.concat_tables([self.emitters(k) for k in shards]) if shards else schema.empty_table()

    def emitters(self, shard: int) -> pa.Table:
        """smlm: shard k's emitter rows (schemas/emitters.v1.json), schema-checked."""
        if self.product != "smlm":
            raise FactoryError(f"{self.loc} holds the {self.product} product, which has no emitter table.")
        table = read_parquet(self.loc, layout.emitters_part(shard), f"the emitter part of shard {shard}")
        schemas.check_table_schema(table.schema, schemas.table_schema("emitters.v1.json"),
                                   f"{self.loc} emitter part of shard {shard}")
        return table

    def checksums(self, name: str, shard: int) -> list[str]:
        """Shard k's manifest checksums of array ``name`` (a complete store's column is read once per process)."""
        column = self.arrays[name].checksum_column
        if self.complete and self.version >= 2:
            if column not in self._checksum_columns:
                self._checksum_columns[column] = self._compacted.column(column).to_pylist()
            sl = self.shard_slice(shard)
            return self._checksum_columns[column][sl.start:sl.stop]
        return self.manifest_part(shard, [column]).column(0).to_pylist()

    # ----------------------------------------------------------------- checked reads
    @property
    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self)
        return self._reader

    def read_shard(self, name: str, shard: int) -> np.ndarray:
        """Every sample of committed shard k of array ``name``, (count, ...), each checked against its checksum."""
        if name not in self.arrays:
            raise FactoryError(f"{self.loc} has no array '{name}'; it has {', '.join(self.arrays)}.")
        return self.reader.read(name, shard, self.checksums(name, shard))

    def read_sample(self, name: str, i: int) -> np.ndarray:
        """One sample of array ``name`` (its inner chunk only), checked against its manifest checksum."""
        shard = int(i) // self.shard_size
        want = self.checksums(name, shard)[int(i) - self.shard_slice(shard).start]
        return self.reader.read_one(name, int(i), want)

    def read_samples(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Samples ``ids`` (ascending) of array ``name``, one checked whole-shard read per shard touched."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), *self.arrays[name].sample_shape), self.arrays[name].dtype)
        shard_of = ids // self.shard_size
        for k in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == k)
            out[rows] = self.read_shard(name, int(k))[ids[rows] - int(k) * self.shard_size]
        return out

    # ----------------------------------------------------------------- attrs (the writer's)
    def set_attrs(self, **changes) -> None:
        """Update the factory attrs, validated before they are written (drops stale consolidated metadata)."""
        if not self.writable:
            raise FactoryError(f"{self.loc} was opened read-only.")
        attrs = {**self.attrs, **changes}
        schemas.validate(attrs, f"group_attrs.v{self.version}.json", "group attrs")
        group = zarr.open_group(self.loc.zarr_store(read_only=False), mode="r+", zarr_format=3, use_consolidated=False)
        group.attrs["factory"] = attrs
        self.attrs = attrs
        self.__dict__.pop("_compacted", None)
        self._checksum_columns.clear()
