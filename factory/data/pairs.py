"""Stream a store into PyTorch: :class:`PairDataset` (an ``IterableDataset`` of ``(lr, hr)`` tensors) and :func:`make_loader`.

    cfg = DataConfig("pairs.zarr", where="photons < 300", upsample=Upsample.bilinear,
                     normalize=Normalization.percentile)
    loader = make_loader(cfg, batch_size=16, num_workers=2)
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        for lr, hr in loader:                 # (B, 1, H, W), (B, 1, H, W) float32
            ...

Which samples, the split over ranks and workers and the shuffle: :mod:`factory.data.sharded`.

**Values.** ``normalize`` (LR) and ``normalize_hr``: ``none`` | ``percentile`` (per image) |
``camera`` (LR only, photo-electrons from each sample's manifest row); see :mod:`factory.normalize`.
``upsample`` brings LR to the HR grid (``torch.nn.functional.interpolate``, ``nearest`` or
``bilinear`` with ``align_corners=False``) for same-size CARE training. The store is opened
lazily in each worker process (never pickled open).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from factory.data.sharded import ShardedDataset, loader
from factory.errors import FactoryError
from factory.normalize import CAMERA_FIELDS, Normalization, Upsample, normalize



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


def upsample(lr: torch.Tensor, size: tuple[int, int], how: Upsample) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W) by nearest or bilinear interpolation (``Upsample.none``: unchanged)."""
    how = Upsample(how)
    if how is Upsample.none or tuple(lr.shape[-2:]) == tuple(size):
        return lr
    if how is Upsample.nearest:
        return F.interpolate(lr, size=size, mode="nearest")
    return F.interpolate(lr, size=size, mode="bilinear", align_corners=False)


class PairDataset(ShardedDataset):
    """``(lr, hr)`` float32 tensors of shapes (1, h, w) or upsampled (1, H, W), and (1, H, W);
    ``(lr, hr, fields)`` when ``cfg.fields`` names manifest columns."""

    PRODUCT = "pairs"

    def __init__(self, cfg: DataConfig):
        cfg.validate()
        super().__init__(cfg)
        self.hr_shape, self.lr_shape = self.sample_shapes["hr"], self.sample_shapes["lr"]

    def load_shard(self, shard: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The selected samples of one shard: lr (n, 1, h|H, w|W), hr (n, 1, H, W) float32, fields {name: list}."""
        store, cfg = self.open(), self.cfg
        keep = self.selected(shard)  # (n,) offsets inside the shard
        hr = store.read_shard("hr", shard)[keep]  # (n, H, W) float32: one checked read of zarr shard k
        lr = store.read_shard("lr", shard)[keep]  # (n, h, w) uint16 ADU
        camera = Normalization(cfg.normalize) is Normalization.camera
        fields = self.fields(shard, CAMERA_FIELDS if camera else ())
        lr = normalize(lr, cfg.normalize, cfg.percentiles, fields)  # (n, h, w) float32
        hr = normalize(hr, cfg.normalize_hr, cfg.percentiles)  # (n, H, W) float32
        lr_t = upsample(torch.from_numpy(lr)[:, None], self.hr_shape, cfg.upsample)  # (n, 1, H, W) or (n, 1, h, w)
        names = list(dict.fromkeys(("sample_id", *cfg.fields))) if cfg.fields else []
        return lr_t, torch.from_numpy(hr)[:, None], {c: fields[c] for c in names}

    def shard_items(self, shard: int) -> Iterator[tuple]:
        lr, hr, fields = self.load_shard(shard)
        for j in range(len(hr)):  # clone: a sample held in the shuffle buffer does not pin its whole shard
            pair = (lr[j].clone(), hr[j].clone())
            yield (*pair, {c: v[j] for c, v in fields.items()}) if self.cfg.fields else pair


def make_loader(cfg: DataConfig, batch_size: int, num_workers: int = 0, **loader_kwargs) -> DataLoader:
    """A DataLoader over :class:`PairDataset` (``loader.dataset.set_epoch(e)`` each epoch); extra
    keyword arguments go to ``torch.utils.data.DataLoader`` (e.g. ``pin_memory=True``, ``drop_last=True``)."""
    if batch_size < 1 or num_workers < 0:
        raise FactoryError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
    return loader(PairDataset(cfg), batch_size, num_workers, **loader_kwargs)
