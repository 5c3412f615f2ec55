"""``factory export``: the selected pairs as files other tools read, written shard by shard (memory
flat in the number of samples: one read per shard per array).

``tiff`` (Fiji): ``lr.tif`` (N, h, w) uint16 ADU and ``hr.tif`` (N, H, W) float32 normalized density,
ImageJ TIFF stacks with their pixel sizes (:func:`factory.images.write_tiff_frames`); with
``per_sample`` instead ``lr/{id:06d}.tif`` and ``hr/{id:06d}.tif`` (same names in two folders, as
CSBDeep's ``get_tiff_pairs_from_folders`` expects).

``npz`` (CSBDeep): ``pairs.npz`` with ``X`` (N, 1, H, W) float32 = LR upsampled to the HR grid
(bilinear by default, the one default of factory.data and factory.care) and normalized (:mod:`factory.data` rules; default per-image percentiles 1 / 99.8, CSBDeep's own
default), ``Y`` (N, 1, H, W) float32 = HR, and ``axes = 'SCYX'`` -- what ``csbdeep.io.save_training_data``
writes and ``load_training_data`` reads. The arrays are streamed into the zip (no N-sized buffer).

Both write ``samples.csv``: the manifest rows of the exported samples, in export order
(ascending sample_id), so frame j of a stack is row j.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from factory import images, query
from factory.normalize import CAMERA_FIELDS, Normalization, Upsample
from factory.errors import FactoryError
from factory.files import atomic_write
from factory.store import Store


class ExportFormat(str, Enum):
    tiff = "tiff"  # pairs: lr.tif + hr.tif; smlm: hr.tif + frames/<id>.tif + kde/<id>.tif
    npz = "npz"  # pairs: CSBDeep training data
    thunderstorm = "thunderstorm"  # smlm: <id>.tif + ThunderSTORM ground-truth <id>.csv
    decode = "decode"  # smlm: <id>.tif + DECODE EmitterSet <id>.decode.csv


@dataclass(frozen=True)
class ExportConfig:
    format: ExportFormat
    out: Path  # a folder (created; must be empty unless overwrite)
    where: str | None = None  # SQL condition on manifest columns
    per_sample: bool = False  # tiff only: one file per sample in lr/ and hr/
    normalize: Normalization = Normalization.percentile  # npz X (LR)
    normalize_hr: Normalization = Normalization.none  # npz Y (HR)
    upsample: Upsample = Upsample.bilinear  # npz X: LR to the HR grid (as factory.data, jobs/train_care.py and factory.care)
    percentiles: tuple[float, float] = (1.0, 99.8)
    overwrite: bool = False


@dataclass
class ExportResult:
    samples: int
    files: list[Path]


def _prepare_out(cfg: ExportConfig, names: list[str]) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FactoryError(f"{out} exists and is a file; --out must be a folder.")
    clash = [n for n in names if (out / n).exists()]
    if clash and not cfg.overwrite:
        raise FactoryError(f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them.")
    if not out.resolve().parent.is_dir():
        raise FactoryError(f"cannot create {out}: folder {out.resolve().parent} does not exist.")
    out.mkdir(exist_ok=True)


def shard_blocks(store: Store, ids: np.ndarray, array: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sample ids, (n, ...) block) of the selected samples, one whole-shard read at a time."""
    shard_of = ids // store.shard_size
    for k in np.unique(shard_of):
        chosen = ids[shard_of == k]
        yield chosen, store.read_shard(array, int(k))[chosen - store.shard_slice(int(k)).start]  # checked


def _frames(store: Store, ids: np.ndarray, array: str) -> Iterator[np.ndarray]:
    for _, block in shard_blocks(store, ids, array):
        yield from block


def export_tiff(store: Store, ids: np.ndarray, cfg: ExportConfig) -> list[Path]:
    out, spec = Path(cfg.out), store.spec
    files = []
    if cfg.per_sample:
        for name, pixel_nm in (("lr", spec.lr_pixel_nm), ("hr", spec.hr_pixel_nm)):
            (out / name).mkdir(exist_ok=True)
            for chosen, block in shard_blocks(store, ids, name):
                for i, img in zip(chosen, block):
                    path = out / name / f"{int(i):06d}.tif"
                    images.write_tiff(path, img, pixel_nm, overwrite=True)
                    files.append(path)
        return files
    for name, pixel_nm in (("lr", spec.lr_pixel_nm), ("hr", spec.hr_pixel_nm)):
        arr = getattr(store, name)
        path = out / f"{name}.tif"
        images.write_tiff_frames(path, _frames(store, ids, name), (len(ids), *arr.shape[1:]), arr.dtype, pixel_nm, overwrite=True)
        files.append(path)
    return files


def _write_npy(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], blocks: Iterator[np.ndarray]) -> None:
    """One float32 ``.npy`` member of a zip, written block by block (the format np.load reads)."""
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype="<f4").tobytes())


def camera_params(store: Store, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The CAMERA_FIELDS of the given (ascending) sample ids from the manifest: {name: (M,)}."""
    table = store.manifest(["sample_id", *CAMERA_FIELDS])
    position = np.searchsorted(table.column("sample_id").to_numpy(), ids)
    return {c: table.column(c).to_numpy()[position] for c in CAMERA_FIELDS}


def export_npz(store: Store, ids: np.ndarray, cfg: ExportConfig) -> list[Path]:
    import torch

    from factory.data import upsample
    from factory.normalize import normalize

    if Upsample(cfg.upsample) is Upsample.none:
        raise FactoryError("CSBDeep needs X and Y of the same shape: --upsample must be nearest or bilinear for npz.")
    H = store.spec.hr_size
    camera = camera_params(store, ids) if Normalization(cfg.normalize) is Normalization.camera else None

    def x_blocks() -> Iterator[np.ndarray]:
        start = 0  # shard blocks come in ascending sample id order: consecutive runs of ids
        for chosen, lr in shard_blocks(store, ids, "lr"):
            params = {c: v[start:start + len(chosen)] for c, v in camera.items()} if camera else None
            start += len(chosen)
            x = normalize(lr, cfg.normalize, cfg.percentiles, params)  # (n, h, w) float32
            yield upsample(torch.from_numpy(x)[:, None], (H, H), cfg.upsample).numpy()  # (n, 1, H, W)

    def y_blocks() -> Iterator[np.ndarray]:
        for _, hr in shard_blocks(store, ids, "hr"):
            yield normalize(hr, cfg.normalize_hr, cfg.percentiles)[:, None]  # (n, 1, H, W)

    path = Path(cfg.out) / "pairs.npz"
    with atomic_write(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_npy(zf, "X", (len(ids), 1, H, H), x_blocks())
            _write_npy(zf, "Y", (len(ids), 1, H, H), y_blocks())
            with zf.open("axes.npy", "w") as f:
                np.lib.format.write_array(f, np.array("SCYX"))
    return [path]


def export(store: Store, cfg: ExportConfig) -> ExportResult:
    """Write the samples matching ``cfg.where`` (all committed ones by default) in ``cfg.format``."""
    fmt = ExportFormat(cfg.format)
    if cfg.per_sample and fmt is not ExportFormat.tiff:
        raise FactoryError("--per-sample applies to --format tiff only.")
    smlm_formats = (ExportFormat.thunderstorm, ExportFormat.decode)
    if store.product == "smlm" and fmt is ExportFormat.npz or store.product == "pairs" and fmt in smlm_formats:
        fits = "thunderstorm, decode or tiff" if store.product == "smlm" else "tiff or npz"
        raise FactoryError(f"--format {fmt.value} does not apply to a {store.product} store; use {fits}.")
    ids = query.sample_ids_where(store, cfg.where)  # (M,) ascending
    if len(ids) == 0:
        what = f"match {cfg.where!r}" if cfg.where else "are committed"
        raise FactoryError(f"no samples of {store.loc} {what}; nothing to export.")
    if store.product == "smlm":
        from factory.tools.export_smlm import export_smlm, names_written

        _prepare_out(cfg, names_written(fmt.value, ids) + ["samples.csv"])
        files = export_smlm(store, ids, fmt.value, Path(cfg.out))
    else:
        names = (["lr", "hr"] if cfg.per_sample else ["lr.tif", "hr.tif"]) if fmt is ExportFormat.tiff else ["pairs.npz"]
        _prepare_out(cfg, names + ["samples.csv"])
        files = export_tiff(store, ids, cfg) if fmt is ExportFormat.tiff else export_npz(store, ids, cfg)
    manifest = store.manifest()
    rows = manifest.filter(pc.is_in(manifest.column("sample_id"), value_set=pa.array(ids)))
    pacsv.write_csv(rows, Path(cfg.out) / "samples.csv")
    return ExportResult(len(ids), files + [Path(cfg.out) / "samples.csv"])
