"""A Ray Data reader for factory stores (Ray's own ``read_zarr`` knows zarr v2 only): one read task per shard.

    import factory.raydata
    ds = factory.raydata.read_store("s3://bucket/pairs.zarr", where="photons < 300", fields=("photons",))
    for batch in ds.iter_torch_batches(batch_size=32):   # {"hr": (B, H, W), "lr": (B, h, w), "sample_id": (B,), ...}
        ...

Each row is one sample: every data array of the store (pairs: ``hr``, ``lr``; smlm: ``hr``, ``frames``,
``kde``), ``sample_id`` and the manifest ``fields`` asked for. Rows come from checked reads
(:meth:`factory.store.Store.read_shard`): a damaged shard fails its read task with the store's one
sentence. ``where`` is the same read-only SQL expression as everywhere else, evaluated once on the
driver; shards with no selected sample get no task. Needs ``pip install 'factory[cluster]'`` (Ray Data).
"""
from __future__ import annotations

import numpy as np

from factory.errors import FactoryError
from factory.query import open_store, sample_ids_where


def _read_shard(location: str, shard: int, offsets: np.ndarray, arrays: tuple[str, ...], fields: tuple[str, ...]):
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    from factory.store import Store

    store = Store.open(location)
    batch = {name: store.read_shard(name, shard)[offsets] for name in arrays}  # checked, (n, ...) each
    table = store.manifest_part(shard, ["sample_id", *fields])
    for name in ("sample_id", *fields):
        column = table.column(name).to_numpy(zero_copy_only=False)
        batch[name] = np.asarray(column)[offsets] if not pa.types.is_timestamp(table.schema.field(name).type) \
            else np.asarray([str(v) for v in column])[offsets]
    return [BlockAccessor.batch_to_block(batch)]


def read_store(location: str, where: str | None = None, shards: tuple[int, ...] | None = None,
               arrays: tuple[str, ...] | None = None, fields: tuple[str, ...] = ()):
    """A ``ray.data.Dataset`` of the store's committed samples (see the module docstring)."""
    try:
        import ray.data
        from ray.data import Datasource
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask
    except ImportError:
        raise FactoryError("reading a store with Ray Data needs Ray Data: pip install 'factory[cluster]'.") from None
    store = open_store(location)
    arrays = tuple(arrays or store.arrays)
    unknown = [a for a in arrays if a not in store.arrays] + [f for f in fields if f not in store.manifest_schema.names]
    if unknown:
        raise FactoryError(f"{store.loc} has no array or manifest column {', '.join(map(repr, unknown))}.")
    ids = sample_ids_where(store, where)
    chosen = set(store.committed_shards()) if shards is None else set(shards) & set(store.committed_shards())
    plan = [(k, ids[ids // store.shard_size == k] - store.shard_slice(k).start) for k in sorted(chosen)]
    plan = [(k, offsets) for k, offsets in plan if len(offsets)]
    url, per_sample = store.loc.url, sum(int(np.prod(store.arrays[a].sample_shape)) * np.dtype(store.arrays[a].dtype).itemsize
                                         for a in arrays)

    class StoreDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(len(offsets) for _, offsets in plan) * per_sample

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(lambda k=k, o=offsets: _read_shard(url, k, o, arrays, tuple(fields)),
                             BlockMetadata(num_rows=len(offsets), size_bytes=len(offsets) * per_sample, exec_stats=None,
                                           input_files=(f"{url}#shard={k}",)))
                    for k, offsets in plan]

    return ray.data.read_datasource(StoreDatasource(), override_num_blocks=max(1, len(plan)))
