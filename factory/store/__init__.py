"""The store: one package that owns every byte a factory store holds (layout, run spec, schemas,
location, lease, checked reader, writer, verify). It depends on nothing above it (not on the
pipeline, the consumers or the CLI); a location is a URL string, resolved once by
:class:`factory.store.location.Location`.

    from factory.store import Store, sample_checksum
    s = Store.open("pairs.zarr")          # or s3://bucket/pairs.zarr
    s.read_shard("hr", k)                 # checked against the manifest

Names are imported lazily (PEP 562), so ``factory.store.schemas`` (the one schema loader, used by the
optics and SMLM configs too) loads without zarr or obstore.
"""
from __future__ import annotations

import importlib

_NAMES = {"Location": "location", "to_url": "location", "sample_checksum": "reader", "RunSpec": "spec",
          "Store": "store", "is_store": "store", "now_utc": "store"}
_MODULES = ("layout", "lease", "location", "ome", "reader", "schemas", "spec", "store", "verify", "writer")
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"factory.store.{_NAMES[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"factory.store.{name}")
    raise AttributeError(f"module 'factory.store' has no attribute {name!r}")
