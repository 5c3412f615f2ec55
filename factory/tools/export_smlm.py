"""``factory export`` of an ``smlm`` store: per sample, the frame stack and its ground truth for localization tools.

    --format thunderstorm   <id>.tif (F, h, w) uint16 ADU, camera pixel size + <id>.csv, ThunderSTORM ground truth
                            (id, frame, x [nm], y [nm], sigma [nm], intensity [photon], offset [photon],
                            bkgstd [photon], uncertainty [nm]; frames from 1): ThunderSTORM's "Import ground-truth"
                            and "Performance evaluation", Picasso, SMAP, the SMLM-challenge scripts
    --format decode         <id>.tif + <id>.decode.csv, a DECODE EmitterSet (x/y in px, DECODE's axes, frame_ix from 0)
                            that ``decode.utils.emitter_io.load_csv`` reads
    --format tiff           hr.tif (N, H, W) density stack, frames/<id>.tif (F, h, w) ADU and kde/<id>.tif (F, H, W)

Every array is read through the store's checked reads; the tables come from :mod:`factory.smlm.exports`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from factory import images
from factory.files import atomic_write
from factory.smlm.exports import decode_csv_preamble, decode_table, thunderstorm_table
from factory.store import Store

FORMATS = ("thunderstorm", "decode", "tiff")


def _write_csv(path: Path, table: pa.Table, preamble: str = "") -> None:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    with atomic_write(path) as tmp:
        tmp.write_bytes(preamble.encode() + buf.getvalue())


def names_written(fmt: str, ids: np.ndarray) -> list[str]:
    """Files and folders an export would create (to refuse clobbering them)."""
    if fmt == "tiff":
        return ["hr.tif", "frames", "kde"]
    suffix = ".csv" if fmt == "thunderstorm" else ".decode.csv"
    return [f"{int(i):06d}{ext}" for i in ids[:50] for ext in (".tif", suffix)]


def export_smlm(store: Store, ids: np.ndarray, fmt: str, out: Path) -> list[Path]:
    """Write the selected samples (ascending ids) of an smlm store in ``fmt``; returns the files written."""
    spec, files = store.spec, []
    shard_of = ids // store.shard_size
    hr_stack = []
    if fmt == "tiff":
        (out / "frames").mkdir(exist_ok=True)
        (out / "kde").mkdir(exist_ok=True)
    for k in np.unique(shard_of):
        k = int(k)
        chosen = ids[shard_of == k]
        offsets = chosen - store.shard_slice(k).start
        frames = store.read_shard("frames", k)[offsets]  # (n, F, h, w) uint16, checked
        if fmt == "tiff":
            kde = store.read_shard("kde", k)[offsets]  # (n, F, H, W)
            hr_stack.append(store.read_shard("hr", k)[offsets])
            for i, stack, target in zip(chosen, frames, kde):
                for folder, data, pixel in (("frames", stack, spec.lr_pixel_nm), ("kde", target, spec.hr_pixel_nm)):
                    path = out / folder / f"{int(i):06d}.tif"
                    images.write_tiff(path, data, pixel, overwrite=True)
                    files.append(path)
            continue
        emitters = store.emitters(k)
        sigma = dict(zip(*store.manifest_part(k, ["sample_id", "psf_sigma_nm"]).to_pydict().values()))
        sample_of = emitters.column("sample_id").to_numpy()
        for i, stack in zip(chosen, frames):
            rows = emitters.filter(pa.array(sample_of == i))
            tif = out / f"{int(i):06d}.tif"
            images.write_tiff(tif, stack, spec.lr_pixel_nm, overwrite=True)
            if fmt == "thunderstorm":
                csv = out / f"{int(i):06d}.csv"
                _write_csv(csv, thunderstorm_table(rows, sigma[int(i)]))
            else:
                csv = out / f"{int(i):06d}.decode.csv"
                _write_csv(csv, decode_table(rows, spec.lr_pixel_nm), decode_csv_preamble(spec.lr_pixel_nm))
            files += [tif, csv]
    if fmt == "tiff":
        path = out / "hr.tif"
        images.write_tiff(path, np.concatenate(hr_stack), spec.hr_pixel_nm, overwrite=True)
        files.insert(0, path)
    return files
