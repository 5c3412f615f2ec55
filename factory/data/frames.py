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
import torch
from torch.utils.data import DataLoader

from factory.data.sharded import ShardedDataset
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
        from factory.smlm import CameraMaps, SmlmParams

        store = self.open()
        table = store.manifest_part(shard).to_pylist()
        maps = None
        if store.loc.exists("camera/gain_factor/zarr.json"):
            import zarr

            group = zarr.open_group(store.loc.zarr_store(read_only=True), path="camera", mode="r", zarr_format=3)
            maps = CameraMaps.from_arrays({name: group[name][...] for name in group.array_keys()})
        out = []
        for row in (table[j] for j in self.selected(shard)):
            params = SmlmParams.from_record(row)
            out.append(maps.camera_model(params) if maps is not None else _scalar_camera(params))
        return out

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


def _scalar_camera(params):
    from factory.smlm import CameraModel

    return CameraModel.from_params(params)


def make_frame_loader(cfg: FrameConfig, batch_size: int, num_workers: int = 0, **loader_kwargs) -> DataLoader:
    """A DataLoader over :class:`FrameDataset` (``loader.dataset.set_epoch(e)`` each epoch)."""
    if batch_size < 1 or num_workers < 0:
        raise FactoryError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
    return DataLoader(FrameDataset(cfg), batch_size=batch_size, num_workers=num_workers, **loader_kwargs)
