"""Checked reads of whole store shards: decode with a well-kept library, then trust nothing unchecked.

Every reader path (the PyTorch dataset, export, preview, audit, CARE training) reads samples through
:meth:`ShardReader.read`, which returns a whole store shard of one array, (count, ...), and refuses
it in one sentence unless

* every inner chunk exists (a deleted or truncated shard file is not silently zarr's fill value), and
* every sample's checksum of its stored bytes equals its manifest checksum (:func:`sample_checksum`:
  xxh3-128 in layout 2, ~50x faster than layout 1's blake2b-128, so checking costs a few percent of a
  decode (benchmarks/dataset.py); ``schemas/manifest.v2.json`` "checksum").

Decoders, the fastest that handles the location (measured in benchmarks/dataset.py):

* tensorstore (``zarr3`` driver, ``fill_missing_data_reads: false``) for local folders and S3; one
  read of the whole zarr shard per call, decoded in C++;
* zarr-python 3 for everything else (``memory://``, gs://, ...), whenever tensorstore is not
  installed, and in a process forked from one that already used tensorstore (its thread pools do not
  survive a fork: a DataLoader worker forked after the parent read shards); a missing shard file is
  detected by one existence check.

``factory verify`` deliberately decodes through zarr-python (:mod:`factory.store.verify`), so the
two read paths check each other.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from factory.errors import FactoryError
from factory.store.layout import ArraySpec

if TYPE_CHECKING:
    from factory.store.store import Store


def sample_checksum(array: np.ndarray, version: int = 2) -> str:
    """Hex checksum of one sample as stored: C order, little-endian, in its own dtype (float32 HR, uint16 LR...).
    Store layout 2: xxh3-128 (xxhash); layout 1: blake2b-128 (hashlib)."""
    a = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    if version == 1:
        return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()
    return xxhash.xxh3_128_hexdigest(a)


def damaged(store: "Store", shard: int, what: str) -> FactoryError:
    return FactoryError(f"{store.loc}: shard {shard}: {what}; this data is damaged and was not used. "
                        f"`factory verify {store.loc}` lists all damage and `factory repair {store.loc}` regenerates it.")


class _Tensorstore:
    """tensorstore handles of a store's arrays (opened lazily, one per array per process)."""

    def __init__(self, store: "Store"):
        import tensorstore as ts

        self.ts, self.store, self.handles = ts, store, {}

    def kvstore(self, array: ArraySpec) -> dict:
        loc = self.store.loc
        if loc.local:
            return {"driver": "file", "path": loc.path(array.path) + "/"}
        bucket, _, key = loc.root.partition("/")
        spec = {"driver": "s3", "bucket": bucket, "path": f"{key}/{array.path}/".lstrip("/"),
                "aws_credentials": {"type": "environment"}}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            spec["endpoint"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            spec["aws_region"] = region
        return spec

    def read(self, array: ArraySpec, lo: int, hi: int) -> np.ndarray:
        global _TS_PID
        _TS_PID = _TS_PID or os.getpid()
        handle = self.handles.get(array.name)
        if handle is None:
            spec = {"driver": "zarr3", "kvstore": self.kvstore(array), "fill_missing_data_reads": False,
                    "open": True, "recheck_cached_data": False}
            handle = self.handles[array.name] = self.ts.open(spec, read=True).result()
        return handle[lo:hi].read().result()


_TS_PID: int | None = None  # the process that started tensorstore's thread pools (they do not survive a fork)


def _tensorstore_can_read(store: "Store") -> bool:
    if os.environ.get("FACTORY_READER") == "zarr":  # force the fallback (benchmarks, debugging)
        return False
    if _TS_PID is not None and _TS_PID != os.getpid():  # forked (a DataLoader worker) from a process that used it
        return False
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        return False
    return store.loc.local or store.loc.protocol == "s3"


class ShardReader:
    """Whole-shard, checksum-verified reads of one store's arrays (one per process; cheap to make)."""

    def __init__(self, store: "Store", backend: str | None = None):
        self.store = store
        use_ts = _tensorstore_can_read(store) if backend is None else backend == "tensorstore"
        self.backend = "tensorstore" if use_ts else "zarr"
        self._ts = _Tensorstore(store) if use_ts else None

    def _decode(self, array: ArraySpec, shard: int, lo: int, hi: int) -> np.ndarray:
        if self._ts is not None:
            try:
                return self._ts.read(array, lo, hi)
            except ValueError as exc:  # tensorstore's errors are ValueError subclasses (missing chunk, corrupt data)
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                reason = "data file or an inner chunk is missing" if "missing" in text.lower() or "not found" in text.lower() \
                    else f"data does not decode ({text[:160]})"
                raise damaged(self.store, shard, f"{array.name} {reason}") from None
        if not self.store.loc.exists(array.shard_key(shard)):
            raise damaged(self.store, shard, f"{array.name} data file {array.shard_key(shard)} is missing")
        try:
            return self.store.zarr_array(array.name)[lo:hi]
        except Exception as exc:  # zarr raises several types for corrupt zstd frames / shard indexes
            raise damaged(self.store, shard, f"{array.name} data does not decode ({type(exc).__name__})") from None

    def read_one(self, name: str, i: int, checksum: str) -> np.ndarray:
        """Sample i alone (one inner chunk of its shard), checked against ``checksum``."""
        array = self.store.arrays[name]
        shard = i // self.store.shard_size
        sample = np.asarray(self._decode(array, shard, i, i + 1))[0]
        if sample_checksum(sample, self.store.version) != checksum:
            raise damaged(self.store, shard, f"sample {i}'s {name} does not match its manifest checksum")
        return sample

    def read(self, name: str, shard: int, checksums: list[str] | None = None) -> np.ndarray:
        """Samples of store shard k of array ``name``: (count, ...) in the stored dtype, every one checked.

        ``checksums`` (the shard's ``<name>_checksum`` manifest column) is read from the store when not given.
        """
        array = self.store.arrays[name]
        sl = self.store.shard_slice(shard)
        block = np.asarray(self._decode(array, shard, sl.start, sl.stop))  # (count, ...)
        if checksums is None:
            checksums = self.store.manifest_part(shard, [array.checksum_column]).column(0).to_pylist()
        if len(checksums) != len(block):
            raise damaged(self.store, shard, f"its manifest part lists {len(checksums)} samples, the shard holds {len(block)}")
        for j, want in enumerate(checksums):
            if sample_checksum(block[j], self.store.version) != want:
                raise damaged(self.store, shard, f"sample {sl.start + j}'s {name} does not match its manifest checksum")
        return block
