"""Stream an ``smlm`` store into PyTorch, one camera frame at a time: :class:`FrameDataset`.

    cfg = FrameConfig("smlm.zarr", where="active_per_um2 > 1")      # dense frames only
    loader = make_frame_loader(cfg, batch_size=32, num_workers=2)
    for frame, kde in loader:            # (B, 1, h, w) photo-electrons above offset, (B, 1, H, W) emitters per HR pixel
        ...

Each item is one frame of one sample's stack with its KDE target (the per-frame density of the
emitters active in it: unit-mass Gaussians of ``kde_sigma_nm``, :mod:`factory.smlm.kde`).
``normalize``: ``camera`` (default) turns ADU into photo-electrons above the offset at the EM
register's input, ``(ADU - offset) * gain_e_per_adu / em_gain``, with each sample's camera from its
manifest row and, for sCMOS stores, the run's per-pixel maps (``camera/``): the same numbers a real
frame gives once its camera is known, so a model trained on them applies to real data. ``none``
yields ADU. ``frames`` restricts each stack to some frame indices. Which samples, the split over
ranks and workers, and the shuffle (over frames, ``shuffle_buffer`` frames): :mod:`factory.data.sharded`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from factory.data.sharded import ShardedDataset, loader
from factory.errors import FactoryError


class FrameNormalization(str, Enum):
    camera = "camera"  # photo-electrons above offset: (ADU - offset) * gain_e_per_adu / em_gain
    none = "none"  # ADU as stored


@dataclass(frozen=True)
class FrameConfig:
    store: str | Path  # an smlm store: folder or URL
    where: str | None = None  # SQL expression on manifest columns selecting samples
    shards: tuple[int, ...] | None = None  # only these shards (e.g. a held-out split)
    shuffle: bool = True
    seed: int = 0
    shuffle_buffer: int = 512  # frames held for in-worker shuffling (0 or 1 = none)
    frames: tuple[int, ...] | None = None  # frame indices of each stack; None = all
    normalize: FrameNormalization = FrameNormalization.camera
    fields: tuple[str, ...] = ()  # manifest columns yielded as a third element (+ sample_id and frame)
    rank: int | None = None
    world_size: int | None = None


class FrameDataset(ShardedDataset):
    """``(frame, kde)``: (1, h, w) float32 and (1, H, W) float32; ``(frame, kde, fields)`` with ``cfg.fields``."""

    PRODUCT = "smlm"

    def __init__(self, cfg: FrameConfig):
        super().__init__(cfg)
        F = self.sample_shapes["frames"][0]
        chosen = range(F) if cfg.frames is None else cfg.frames
        bad = [f for f in chosen if not 0 <= f < F]
        if bad:
            raise FactoryError(f"frames {bad} are out of range: the stacks hold frames 0..{F - 1}.")
        self.frame_index = np.asarray(list(chosen), np.int64)
        FrameNormalization(cfg.normalize)

    @property
    def num_frames(self) -> int:
        return self.num_samples * len(self.frame_index)

    def cameras(self, shard: int) -> list:
        """Each selected sample's camera (CameraModel, per-pixel with sCMOS maps)."""
        store = self.open()
        table = store.manifest_part(shard).to_pylist()
        maps = run_camera_maps(store)
        return [sample_camera(table[j], maps) for j in self.selected(shard)]

    def shard_items(self, shard: int) -> Iterator[tuple]:
        store, cfg = self.open(), self.cfg
        keep = self.selected(shard)
        frames = store.read_shard("frames", shard)[keep][:, self.frame_index]  # (n, f, h, w) uint16, checked
        kde = store.read_shard("kde", shard)[keep][:, self.frame_index]  # (n, f, H, W) float32, checked
        if FrameNormalization(cfg.normalize) is FrameNormalization.camera:
            values = np.stack([cam.electrons(stack) for cam, stack in zip(self.cameras(shard), frames)])
        else:
            values = frames.astype(np.float32)
        fields = self.fields(shard)
        for j in range(len(keep)):
            for t, f in enumerate(self.frame_index):
                item = (torch.from_numpy(np.ascontiguousarray(values[j, t]))[None],
                        torch.from_numpy(np.ascontiguousarray(kde[j, t]))[None])
                yield (*item, {**{c: v[j] for c, v in fields.items()}, "frame": int(f)}) if cfg.fields else item


def run_camera_maps(store):
    """The run's sCMOS maps (factory.smlm.CameraMaps) when the store has them, else None."""
    from factory.smlm import CameraMaps

    arrays = store.run_arrays("camera")
    return CameraMaps.from_arrays(arrays) if arrays else None


def sample_camera(row: dict, maps):
    """One sample's camera from its manifest row: per-pixel with the run's maps, else every pixel alike."""
    from factory.smlm import CameraModel, SmlmParams

    params = SmlmParams.from_record(row)
    return maps.camera_model(params) if maps is not None else CameraModel.from_params(params)


def make_frame_loader(cfg: FrameConfig, batch_size: int, num_workers: int = 0, **loader_kwargs) -> DataLoader:
    """A DataLoader over :class:`FrameDataset` (``loader.dataset.set_epoch(e)`` each epoch)."""
    if batch_size < 1 or num_workers < 0:
        raise FactoryError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
    return loader(FrameDataset(cfg), batch_size, num_workers, **loader_kwargs)


class StoreSource:
    """Map-style (frame, KDE, emitters) pairs of an smlm store for the conditional model's training
    (``factory.diffusion.smlm_data.SmlmSource``): pair i is frame ``i % F`` of the i // F-th selected
    sample. Random access reads one sample's inner chunk (checked) and keeps the last ``cache`` samples.

    The split is by shard: ``holdout`` selects the last ``holdout_shards`` committed shards (never
    trained on), otherwise the others. Frames are photo-electrons above offset (``FrameNormalization.camera``).
    """

    def __init__(self, location: str, holdout: bool = False, holdout_shards: int = 1, cache: int = 64):
        from factory.diffusion.smlm_data import SmlmGeometry
        from factory.query import open_store

        store = open_store(location)
        if store.product != "smlm":
            raise FactoryError(f"{store.loc} holds the {store.product} product; train-smlm needs an smlm store "
                               f"(factory generate --mode smlm).")
        committed = store.committed_shards()
        if not 0 < holdout_shards < len(committed):
            raise FactoryError(f"{store.loc} has {len(committed)} committed shard(s): holding out {holdout_shards} "
                               f"must leave at least one to train on.")
        shards = committed[-holdout_shards:] if holdout else committed[:-holdout_shards]
        self.ids = np.concatenate([np.arange(store.shard_slice(k).start, store.shard_slice(k).stop) for k in shards])
        spec, cfg = store.spec, store.spec.degradation
        psf = cfg.get("psf_sigma_nm")
        psf_nm = float(np.mean(psf if isinstance(psf, list) else [psf["low"], psf["high"]] if isinstance(psf, dict) else [psf])) \
            if psf is not None else 95.0
        self.geometry = SmlmGeometry(spec.lr_pixel_nm, spec.hr_pixel_nm, float(cfg["kde_sigma_nm"]), psf_nm)
        self.location, self.frames, self.cache = store.loc.url, spec.frames, cache
        self._store, self._pid, self._samples, self._rows = None, -1, {}, {}

    def __len__(self) -> int:
        return len(self.ids) * self.frames

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_pid": -1, "_samples": {}, "_rows": {}}

    def _open(self):
        import os

        from factory.store import Store

        if self._store is None or self._pid != os.getpid():
            self._store, self._pid, self._samples, self._rows = Store.open(self.location), os.getpid(), {}, {}
            self._maps = run_camera_maps(self._store)
        return self._store

    def _sample(self, i: int):
        if i not in self._samples:
            store = self._open()
            shard = i // store.shard_size
            if shard not in self._rows:
                rows = store.manifest_part(shard).to_pylist()
                emitters = store.emitters(shard)
                self._rows = {shard: (rows, emitters)}  # one shard's table at a time
            rows, emitters = self._rows[shard]
            camera = sample_camera(rows[i - store.shard_slice(shard).start], self._maps)
            mine = emitters.filter(pa.array(emitters.column("sample_id").to_numpy() == i))
            frames = camera.electrons(store.read_sample("frames", i))  # (F, h, w) photo-electrons, checked
            if len(self._samples) >= self.cache:
                self._samples.pop(next(iter(self._samples)))
            self._samples[i] = (frames, store.read_sample("kde", i), mine)  # (F, H, W) checked
        return self._samples[i]

    def __getitem__(self, index: int):
        from factory.diffusion.smlm_data import SmlmPair

        if not 0 <= index < len(self):
            raise IndexError(index)
        j, f = divmod(int(index), self.frames)
        frames, kde, emitters = self._sample(int(self.ids[j]))
        at = emitters.filter(pa.array(emitters.column("frame").to_numpy() == f))
        xy = np.column_stack([at.column("x_nm").to_numpy(), at.column("y_nm").to_numpy()]).astype(np.float64)
        return SmlmPair(np.ascontiguousarray(frames[f], np.float32), np.ascontiguousarray(kde[f]), xy)
