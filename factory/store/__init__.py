"""The store: one package that owns every byte a factory store holds (layout, run spec, schemas,
location, lease, checked reader, writer, verify). It depends on nothing above it (not on the
pipeline, the consumers or the CLI); a location is a URL string, resolved once by
:class:`factory.store.location.Location`.

    from factory.store import Store, sample_checksum
    s = Store.open("pairs.zarr")          # or s3://bucket/pairs.zarr
    s.read_shard("hr", k)                 # checked against the manifest
"""
from factory.store.location import Location, to_url
from factory.store.reader import sample_checksum
from factory.store.spec import RunSpec
from factory.store.store import Store, is_store, now_utc

__all__ = ["Location", "RunSpec", "Store", "is_store", "now_utc", "sample_checksum", "to_url"]
