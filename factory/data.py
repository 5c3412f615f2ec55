"""Stream a store into PyTorch: :class:`PairDataset` (an ``IterableDataset`` of ``(lr, hr)`` tensors) and :func:`make_loader`.

    cfg = DataConfig("pairs.zarr", where="photons < 300", upsample=Upsample.bilinear,
                     normalize=Normalization.percentile)
    loader = make_loader(cfg, batch_size=16, num_workers=2)
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        for lr, hr in loader:                 # (B, 1, H, W), (B, 1, H, W) float32
            ...

**Which samples.** Committed shards only (those with a manifest part when the dataset is made;
make a new dataset to see shards committed later), optionally restricted to ``shards`` (e.g. a
held-out split) and to the samples matching ``where``, a SQL condition on manifest columns
evaluated once with DuckDB (:func:`factory.query.sample_ids_where`).

**Split, every selected sample exactly once per epoch.** The shards holding a selected sample
are ordered by a permutation drawn from ``seed + epoch`` (ascending when ``shuffle`` is off).
Rank r of R takes ``order[r::R]``; DataLoader worker w of W takes ``rank_shards[w::W]``. Ranks
(and workers) get whole shards, so their sample counts differ when the shard count is not a
multiple of R * W, when the last shard is short, or when ``where`` selects unevenly: a rank may
see one shard more than another and a consumer with no shard yields nothing. Under DDP, stop
every rank after ``min(dataset.rank_counts(epoch)) // batch_size`` steps (or use a join
context) so that no rank waits for a collective that the others never reach.

**Order inside a worker.** Each shard is read whole (one read of its zarr shard per array through
:meth:`factory.store.Store.read_shard`: tensorstore where it can, every sample checked against its
manifest checksum, a damaged shard refused with one FactoryError naming store, shard and sample), its
unselected samples dropped, and its samples pass through a shuffle buffer of ``shuffle_buffer``
samples (draw a random slot, yield it, put the next sample there) seeded by
``(seed, epoch, rank, worker)``. Same seed, epoch, ranks and workers -> the same order.

**Values.** ``normalize`` (LR) and ``normalize_hr``: ``none`` | ``percentile`` (per image) |
``camera`` (LR only, photo-electrons from each sample's manifest row); see :mod:`factory.normalize`.
``upsample`` brings LR to the HR grid (``torch.nn.functional.interpolate``, ``nearest`` or
``bilinear`` with ``align_corners=False``) for same-size CARE training. The store is opened
lazily in each worker process (never pickled open).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from factory.errors import FactoryError
from factory.normalize import CAMERA_FIELDS, Normalization, Upsample, normalize
from factory.store import Store

__all__ = ["CAMERA_FIELDS", "DataConfig", "Normalization", "PairDataset", "Upsample", "make_loader", "normalize",
           "shuffle_buffer", "upsample"]


@dataclass(frozen=True)
class DataConfig:
    """What to stream from a store and how (see the module docstring for the rules)."""

    store: str | Path  # a folder path or a URL (s3://bucket/pairs.zarr)
    where: str | None = None  # SQL condition on manifest columns, e.g. "photons < 300"
    shards: tuple[int, ...] | None = None  # only these shards (e.g. a validation split); None = all committed
    shuffle: bool = True  # shard order from seed + epoch and the shuffle buffer; False = sample_id order per consumer
    seed: int = 0
    shuffle_buffer: int = 256  # samples held for in-worker shuffling (0 or 1 = none)
    upsample: Upsample = Upsample.none
    normalize: Normalization = Normalization.none  # LR
    normalize_hr: Normalization = Normalization.none  # none or percentile
    percentiles: tuple[float, float] = (1.0, 99.8)  # (p_lo, p_hi) in percent, for percentile normalization
    fields: tuple[str, ...] = ()  # manifest columns yielded as a third element {name: value} (+ sample_id)
    rank: int | None = None  # None: torch.distributed's rank when initialized, else 0
    world_size: int | None = None  # None: torch.distributed's world size when initialized, else 1

    def validate(self) -> None:
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise FactoryError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}.")
        if self.shuffle_buffer < 0:
            raise FactoryError(f"shuffle_buffer must be >= 0 samples, got {self.shuffle_buffer}.")
        if Normalization(self.normalize_hr) is Normalization.camera:
            raise FactoryError("normalize_hr cannot be 'camera': HR is normalized density, not camera ADU.")


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of torch.distributed when initialized, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def upsample(lr: torch.Tensor, size: tuple[int, int], how: Upsample) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W) by nearest or bilinear interpolation (``Upsample.none``: unchanged)."""
    how = Upsample(how)
    if how is Upsample.none or tuple(lr.shape[-2:]) == tuple(size):
        return lr
    if how is Upsample.nearest:
        return F.interpolate(lr, size=size, mode="nearest")
    return F.interpolate(lr, size=size, mode="bilinear", align_corners=False)


class PairDataset(IterableDataset):
    """``(lr, hr)`` float32 tensors of shapes (1, h, w) or upsampled (1, H, W), and (1, H, W);
    ``(lr, hr, fields)`` when ``cfg.fields`` names manifest columns."""

    def __init__(self, cfg: DataConfig):
        super().__init__()
        cfg.validate()
        from factory.query import open_store, sample_ids_where

        self.cfg = cfg
        store = open_store(cfg.store)
        if store.product != "pairs":
            raise FactoryError(f"{store.loc} holds the {store.product} product, not LR/HR pairs; "
                               f"stream it with factory.data.FrameDataset.")
        names = store.manifest_schema.names
        unknown = [f for f in cfg.fields if f not in names]
        if unknown:
            raise FactoryError(f"no manifest column {', '.join(map(repr, unknown))}; columns are: {', '.join(names)}.")
        self.location = store.loc.url
        committed = store.committed_shards()
        if cfg.shards is not None:
            bad = [k for k in cfg.shards if not 0 <= k < store.num_shards]
            if bad:
                raise FactoryError(f"shards {bad} are out of range: {store.loc} has shards 0..{store.num_shards - 1}.")
            committed = sorted(set(committed) & set(cfg.shards))
        ids = sample_ids_where(store, cfg.where)  # (M,) sorted, committed samples only
        shard_of = ids // store.shard_size
        # shard -> its selected sample ids, for the shards in play that hold at least one
        self.selection = {k: ids[shard_of == k] for k in committed if np.any(shard_of == k)}
        self.hr_shape, self.lr_shape = store.arrays["hr"].sample_shape, store.arrays["lr"].sample_shape
        default_rank, default_world = distributed_rank()
        self.rank = default_rank if cfg.rank is None else cfg.rank
        self.world_size = default_world if cfg.world_size is None else cfg.world_size
        if not 0 <= self.rank < self.world_size:
            raise FactoryError(f"rank {self.rank} is not in 0..world_size-1 (world_size {self.world_size}).")
        self.epoch = 0
        self._store: Store | None = None
        self._store_pid = -1

    # ----------------------------------------------------------------- the split
    @property
    def num_samples(self) -> int:
        """Selected samples over all ranks (one epoch of the whole job)."""
        return int(sum(len(v) for v in self.selection.values()))

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shard order and shuffle are used next (call before iterating;
        with ``persistent_workers=True`` the workers keep the epoch they started with)."""
        self.epoch = int(epoch)

    def shard_order(self, epoch: int) -> list[int]:
        shards = sorted(self.selection)
        if not self.cfg.shuffle:
            return shards
        perm = np.random.default_rng(self.cfg.seed + epoch).permutation(len(shards))
        return [shards[i] for i in perm]

    def rank_shards(self, epoch: int, rank: int | None = None) -> list[int]:
        return self.shard_order(epoch)[(self.rank if rank is None else rank)::self.world_size]

    def rank_counts(self, epoch: int | None = None) -> list[int]:
        """Samples each rank yields in ``epoch`` (default: the current one); they differ when shards do not split evenly."""
        e = self.epoch if epoch is None else epoch
        return [sum(len(self.selection[k]) for k in self.rank_shards(e, r)) for r in range(self.world_size)]

    # ----------------------------------------------------------------- reading
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_store_pid": -1}  # workers open the store themselves

    def _open(self) -> Store:
        if self._store is None or self._store_pid != os.getpid():
            self._store, self._store_pid = Store.open(self.location), os.getpid()
        return self._store

    def load_shard(self, shard: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The selected samples of one shard: lr (n, 1, h|H, w|W), hr (n, 1, H, W) float32, fields {name: list}."""
        store, cfg = self._open(), self.cfg
        keep = self.selection[shard] - store.shard_slice(shard).start  # (n,) offsets inside the shard
        hr = store.read_shard("hr", shard)[keep]  # (n, H, W) float32: one checked read of zarr shard k
        lr = store.read_shard("lr", shard)[keep]  # (n, h, w) uint16 ADU
        names = list(dict.fromkeys(("sample_id", *cfg.fields))) if cfg.fields else []
        wanted = names + (list(CAMERA_FIELDS) if Normalization(cfg.normalize) is Normalization.camera else [])
        fields: dict = {}
        if wanted:
            table = store.manifest_part(shard, list(dict.fromkeys(wanted)))
            fields = {c: [_plain(v) for v in np.asarray(table.column(c).to_pylist(), dtype=object)[keep]]
                      for c in table.column_names}
        lr = normalize(lr, cfg.normalize, cfg.percentiles, fields)  # (n, h, w) float32
        hr = normalize(hr, cfg.normalize_hr, cfg.percentiles)  # (n, H, W) float32
        lr_t = upsample(torch.from_numpy(lr)[:, None], self.hr_shape, cfg.upsample)  # (n, 1, H, W) or (n, 1, h, w)
        return lr_t, torch.from_numpy(hr)[:, None], {c: fields[c] for c in names}

    def _samples(self, shards: list[int]) -> Iterator[tuple]:
        for k in shards:
            lr, hr, fields = self.load_shard(k)
            for j in range(len(hr)):  # clone: a sample held in the shuffle buffer does not pin its whole shard
                pair = (lr[j].clone(), hr[j].clone())
                yield (*pair, {c: v[j] for c, v in fields.items()}) if self.cfg.fields else pair

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.rank_shards(self.epoch)[worker::workers]
        samples = self._samples(shards)
        if self.cfg.shuffle and self.cfg.shuffle_buffer > 1:
            rng = np.random.default_rng([self.cfg.seed, self.epoch, self.rank, worker])
            samples = shuffle_buffer(samples, self.cfg.shuffle_buffer, rng)
        return samples


def _plain(value):
    """Manifest values as collate-friendly Python values (timestamps as ISO 8601 strings)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Bounded shuffle: fill ``size`` slots; then for each new item yield a random slot's item and put
    the new one there; at the end yield the rest in random order. Memory: ``size`` items."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = item
    for j in rng.permutation(len(buf)):
        yield buf[j]


def make_loader(cfg: DataConfig, batch_size: int, num_workers: int = 0, **loader_kwargs) -> DataLoader:
    """A DataLoader over :class:`PairDataset` (``loader.dataset.set_epoch(e)`` each epoch); extra
    keyword arguments go to ``torch.utils.data.DataLoader`` (e.g. ``pin_memory=True``, ``drop_last=True``)."""
    if batch_size < 1 or num_workers < 0:
        raise FactoryError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
    return DataLoader(PairDataset(cfg), batch_size=batch_size, num_workers=num_workers, **loader_kwargs)
