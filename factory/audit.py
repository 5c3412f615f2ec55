"""``factory audit``: is the model copying its training data? The memorization check at store scale.

For every committed sample i of a store, with its HR image g_i (S x S) and training patches
t_j cut from the training images the way training cuts them:

    max_ncc_i    = max_j max_{d in D8} NCC(d(g_i), t_j)        NCC = Pearson correlation of the pixels
    best_patch_i = the j attaining it

over the 8 flips/rotations d of the dihedral group D8 (the training set holds all 8 of every
patch, so a memorized image can come out in any of them). This is
:func:`factory.diffusion.quality.max_ncc` (Saguy et al. 2023 report max 0.345 / mean 0.336
between generated and training microtubule images and 0.372 between independent real images);
here it also keeps the arg max, using that module's own row normalization, one batched matrix
product per (generated batch, reference chunk), so memory is bounded by ``batch`` x 8 x S^2 and
``chunk`` x S^2 floats whatever the store and training set sizes.

Training patches: each TIFF is read (:func:`factory.images.read_stack`), sum-binned by the
integer factor k = store hr_pixel_nm / image pixel nm (pixel size from the file, else
``data_pixel_nm``), scaled to [0, 1] by its 99.9th percentile (:func:`factory.images.normalize_unit`,
as ``train.prepare_data`` does), and cut into S x S windows (S = the store's HR side) at ``stride``
(default S // 4, training's default). NCC only sees the shifts on that grid: a copy shifted by
less than ``stride`` scores lower; ``stride=1`` tries every shift (``stride^2`` times the work).

Output: ``STORE/audit/audit.parquet`` (schema below, written to a temp name and renamed), which
``factory query`` exposes as table ``audit`` (join on ``sample_id``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from factory import images
from factory.diffusion.quality import unit_rows  # the same NCC normalization as max_ncc: same scores
from factory.errors import FactoryError
from factory.store import Store, layout

AUDIT_SCHEMA = pa.schema([
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("max_ncc", pa.float32(), nullable=False, metadata={"description": "max NCC over training patches and the 8 flips/rotations"}),
    pa.field("best_patch", pa.int64(), nullable=False, metadata={"description": "index of the best training patch (file order, then row-major windows)"}),
    pa.field("best_file", pa.string(), nullable=False),
    pa.field("best_y", pa.int32(), nullable=False, metadata={"unit": "binned px", "description": "top row of the best patch in its binned image"}),
    pa.field("best_x", pa.int32(), nullable=False, metadata={"unit": "binned px", "description": "left column of the best patch"}),
])


@dataclass(frozen=True)
class AuditConfig:
    train: tuple[Path, ...]  # training TIFF files or folders (what the model was trained on)
    data_pixel_nm: float | None = None  # pixel size of the training images when their metadata lacks it
    stride: int | None = None  # px between training patch origins on the binned grid; None = HR side // 4
    batch: int = 256  # generated images per matrix product (x 8 views)
    chunk: int = 2048  # training patches per matrix product
    overwrite: bool = False


@dataclass
class Reference:
    """Training images on the store's HR grid and the index of their patches (no patch copies)."""

    images: list[np.ndarray]  # each (Hk, Wk) float32 in [0, 1]
    files: list[str]
    origins: np.ndarray  # (M, 3) int: image index, y, x of each patch's top-left corner
    size: int  # patch side S

    def patches(self, start: int, stop: int) -> np.ndarray:
        """Patches start..stop-1: (c, S, S) float32."""
        S = self.size
        return np.stack([self.images[i][y:y + S, x:x + S] for i, y, x in self.origins[start:stop]])


@dataclass
class AuditResult:
    path: str
    samples: int
    patches: int
    max_ncc: float
    mean_ncc: float
    top: list[tuple[int, float]]  # (sample_id, max_ncc), highest first


def training_reference(cfg: AuditConfig, size: int, hr_pixel_nm: float) -> Reference:
    """Read, bin to ``hr_pixel_nm``, normalize and index the S x S training patches."""
    stride = cfg.stride or max(1, size // 4)
    if stride < 1:
        raise FactoryError(f"--stride must be at least 1 px, got {stride}.")
    if cfg.data_pixel_nm is not None and not cfg.data_pixel_nm > 0:
        raise FactoryError(f"--data-pixel-nm must be > 0 nm, got {cfg.data_pixel_nm:g}.")
    imgs, files, origins = [], [], []
    for path in images.find_tiffs(list(cfg.train)):
        stack = images.read_stack(path)
        src_nm = stack.pixel_nm or cfg.data_pixel_nm
        if src_nm is None:
            raise FactoryError(f"{path}: pixel size unknown; pass --data-pixel-nm.")
        k = images.binning_factor(hr_pixel_nm, src_nm, path)
        if not np.isfinite(stack.data).all():
            raise FactoryError(f"{path}: contains NaN or infinite pixels; it cannot be a training image.")
        for frame in images.bin_sum(stack.data, k):  # (Hk, Wk) per frame
            if float(frame.std()) == 0.0:
                raise FactoryError(f"{path}: an image is constant (all pixels {float(frame.flat[0]):g}); it cannot be a "
                                   f"training image, and every sample would score NCC 0 against it (a false all-clear).")
            img, _ = images.normalize_unit(frame)
            if min(img.shape) < size:
                continue
            ys, xs = np.arange(0, img.shape[0] - size + 1, stride), np.arange(0, img.shape[1] - size + 1, stride)
            grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)  # (P, 2) row-major windows
            origins.append(np.column_stack([np.full(len(grid), len(imgs)), grid]))
            imgs.append(img)
            files.append(path.name)
    if not imgs:
        raise FactoryError(f"no training image is at least {size} x {size} px after binning to {hr_pixel_nm:g} nm.")
    return Reference(imgs, files, np.concatenate(origins).astype(np.int64), size)


def best_match(generated: np.ndarray, ref: Reference, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S) -> (max NCC (N,), best patch index (N,)) over all reference patches and the 8 views."""
    views = images.dihedral8(generated)  # (8, N, S, S)
    g = unit_rows(views.reshape(-1, ref.size, ref.size))  # (8N, S*S) zero-mean, unit-norm
    n = len(generated)
    best, where = np.full(n, -1.0, np.float32), np.zeros(n, np.int64)
    for start in range(0, len(ref.origins), chunk):
        r = unit_rows(ref.patches(start, start + chunk))  # (c, S*S)
        scores = (g @ r.T).reshape(8, n, -1).max(axis=0)  # (N, c) best view per pair
        j = scores.argmax(axis=1)  # (N,)
        s = scores[np.arange(n), j]
        better = s > best
        best[better], where[better] = s[better], start + j[better]
    return best, where


def audit(store: Store, cfg: AuditConfig, on_progress: Callable[[int, int], None] | None = None) -> AuditResult:
    """Score every committed sample against the training patches and write ``STORE/audit/audit.parquet``."""
    if store.read_table(layout.AUDIT_FILE, "the audit table") is not None and not cfg.overwrite:
        raise FactoryError(f"{store.loc.url_of(layout.AUDIT_FILE)} already exists; pass --overwrite to replace it.")
    if cfg.batch < 1 or cfg.chunk < 1:
        raise FactoryError(f"batch and chunk must be at least 1, got {cfg.batch} and {cfg.chunk}.")
    spec = store.spec
    ref = training_reference(cfg, spec.hr_size, spec.hr_pixel_nm)
    shards = store.committed_shards()
    if not shards:
        raise FactoryError(f"{store.loc} has no committed shard; nothing to audit.")
    total = sum(len(spec.shard_ids(k)) for k in shards)
    ids, scores, best = [], [], []
    pending_ids, pending = [], []

    def flush() -> None:
        s, j = best_match(np.concatenate(pending), ref, cfg.chunk)
        ids.append(np.concatenate(pending_ids)), scores.append(s), best.append(j)
        pending_ids.clear(), pending.clear()
        if on_progress is not None:
            on_progress(sum(map(len, ids)), total)

    for k in shards:
        sl = store.shard_slice(k)
        pending.append(store.read_shard("hr", k))  # (S_k, H, W): one checked read per shard
        pending_ids.append(np.arange(sl.start, sl.stop))
        if sum(map(len, pending)) >= cfg.batch:
            flush()
    if pending:
        flush()
    sample_id, max_ncc, best_patch = np.concatenate(ids), np.concatenate(scores), np.concatenate(best)
    origin = ref.origins[best_patch]  # (N, 3)
    table = pa.table({"sample_id": sample_id, "max_ncc": max_ncc.astype(np.float32), "best_patch": best_patch,
                      "best_file": [ref.files[i] for i in origin[:, 0]], "best_y": origin[:, 1].astype(np.int32),
                      "best_x": origin[:, 2].astype(np.int32)}, schema=AUDIT_SCHEMA)
    meta = {"factory.audit": "memorization: max NCC under D8 vs training patches (factory.audit)",
            "training_files": ", ".join(dict.fromkeys(ref.files)), "patch_px": str(ref.size),
            "stride_px": str(cfg.stride or max(1, ref.size // 4)), "hr_pixel_nm": str(spec.hr_pixel_nm),
            "patches": str(len(ref.origins)), "model_id": spec.model_id,
            "created_at": datetime.now(timezone.utc).isoformat()}
    url = store.write_table(layout.AUDIT_FILE, table.replace_schema_metadata(meta), overwrite=True)  # atomic
    order = np.argsort(-max_ncc, kind="stable")[:5]
    return AuditResult(url, len(sample_id), len(ref.origins), float(max_ncc.max()), float(max_ncc.mean()),
                       [(int(sample_id[i]), float(max_ncc[i])) for i in order])
