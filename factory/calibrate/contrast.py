"""LR contrast of a store's pairs (:mod:`factory.optics.contrast`), to set beside a real image's.

    factory.calibrate.contrast.store_contrast("pairs.zarr").line()   # 'median 6.0 (10-90 %: ...)'

The LR frames are streamed through :mod:`factory.data` in photo-electrons (``Normalization.camera``:
each sample's own offset, gain and EM gain from the manifest), so stores with different cameras
compare on one scale, and the real image's tiles are put on it by its calibrated camera
(``factory calibrate`` prints them side by side).
"""
from __future__ import annotations

import numpy as np

from factory.optics.contrast import ContrastStats, contrast_stats


def store_contrast(store: str, where: str | None = None, max_samples: int | None = None) -> ContrastStats:
    """:class:`ContrastStats` of a store's LR frames in photo-electrons (all committed samples, or those
    matching ``where``; at most ``max_samples``, in sample_id order)."""
    from factory.data import DataConfig, Normalization, make_loader

    loader = make_loader(DataConfig(store, where=where, shuffle=False, normalize=Normalization.camera), batch_size=64)
    blocks, count = [], 0
    for lr, _ in loader:  # (B, 1, h, w) photo-electrons
        blocks.append(lr[:, 0].numpy())
        count += len(lr)
        if max_samples is not None and count >= max_samples:
            break
    electrons = np.concatenate(blocks)[:max_samples]  # (N, h, w)
    return contrast_stats(electrons)
