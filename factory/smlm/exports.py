"""The emitter table: its Arrow schema (``schemas/emitters.v1.json``) and the tables other tools read.

Which tool reads which:

- ThunderSTORM (ImageJ/Fiji; its "Import ground-truth" and "Performance evaluation", also
  Picasso, SMAP and the SMLM-challenge scripts): :func:`thunderstorm_table`, written as CSV, next
  to a TIFF of the frames with the camera pixel size. ThunderSTORM's image origin is the
  top-left corner of the top-left pixel and pixel i covers [i, i+1) px (its data generator
  places a molecule of pixel x at x + 0.5 + U(-0.5, 0.5) and evaluates pixel x at x + 0.5:
  ``datagen/DataGenerator.java``, ``EmitterModel.java``), so ``x [nm]`` is our x_nm as is;
  frames count from 1.
- DECODE (Speiser et al. 2021, Nat. Methods 18:1082; ``EmitterSet.load`` of a CSV, i.e.
  ``decode.utils.emitter_io.load_csv`` with its default mapping): :func:`decode_table` under
  :func:`decode_csv_preamble`. DECODE indexes a frame as [x, y] (x along rows: ``GaussianPSF``
  builds ``meshgrid(x, y)`` in ij order, ``DeltaPSF`` writes ``frames[n, x_ix, y_ix]``) with
  pixel centres at integers (frame extent (-0.5, size - 0.5)), and frame_ix from 0. For our
  frames read as they are stored ((F, h, w), h along y):

      x_decode = y_nm / a - 1/2,     y_decode = x_nm / a - 1/2        (px, a = camera pixel, nm)
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from factory.store import schemas

EMITTERS_SCHEMA_VERSION = 1
THUNDERSTORM_COLUMNS = ("id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]", "offset [photon]",
                        "bkgstd [photon]", "uncertainty [nm]")


def emitters_schema() -> pa.Schema:
    """The emitter table's Arrow schema (schemas/emitters.v1.json); field metadata carries ``unit`` and ``description``."""
    return schemas.table_schema(f"emitters.v{EMITTERS_SCHEMA_VERSION}.json")


def emitters_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """An emitter table with exactly ``emitters_schema()`` from one array per column (any order)."""
    schema = emitters_schema()
    arrays = [pa.array(np.asarray(columns[f.name]).astype(f.type.to_pandas_dtype(), copy=False), type=f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def thunderstorm_table(emitters: pa.Table, psf_sigma_nm: float) -> pa.Table:
    """One sample's emitter rows -> ThunderSTORM ground truth (columns ``THUNDERSTORM_COLUMNS``).

    id: 1-based row number; frame: 1-based; x/y [nm]: unchanged (same origin, module docstring);
    sigma [nm]: the PSF sigma; intensity [photon]: the emitter's photons in the frame (before QE,
    as ThunderSTORM's photon units after its camera setup); offset [photon]: the background per
    pixel; bkgstd [photon]: its Poisson standard deviation sqrt(offset); uncertainty [nm]: the
    per-axis CRLB, sqrt((crlb_x^2 + crlb_y^2) / 2).
    """
    n = emitters.num_rows
    background = _column(emitters, "background")
    uncertainty = np.sqrt(0.5 * (_column(emitters, "crlb_x_nm") ** 2 + _column(emitters, "crlb_y_nm") ** 2))
    values = [np.arange(1, n + 1, dtype=np.int64), _column(emitters, "frame").astype(np.int64) + 1,
              _column(emitters, "x_nm"), _column(emitters, "y_nm"), np.full(n, float(psf_sigma_nm)),
              _column(emitters, "photons"), background, np.sqrt(background), uncertainty]
    return pa.table(dict(zip(THUNDERSTORM_COLUMNS, values)))


def decode_table(emitters: pa.Table, pixel_nm: float) -> pa.Table:
    """One sample's emitter rows -> a DECODE EmitterSet table in px (module docstring for the axes).

    Columns as ``EmitterSet.save`` writes them and ``load_csv``'s default mapping needs: x, y, z
    (0: 2-D), phot, frame_ix (0-based), id (emitter_id), bg (photons per pixel), x_cr, y_cr (the
    CRLB in px, swapped with the axes), z_cr, phot_cr, bg_cr, x_sig ... bg_sig (NaN: not known
    or not predictions).
    """
    n = emitters.num_rows
    nan = np.full(n, np.nan)
    return pa.table({
        "x": _column(emitters, "y_nm") / pixel_nm - 0.5, "y": _column(emitters, "x_nm") / pixel_nm - 0.5,
        "z": np.zeros(n), "phot": _column(emitters, "photons"),
        "frame_ix": _column(emitters, "frame").astype(np.int64), "id": _column(emitters, "emitter_id").astype(np.int64),
        "bg": _column(emitters, "background"),
        "x_cr": _column(emitters, "crlb_y_nm") / pixel_nm, "y_cr": _column(emitters, "crlb_x_nm") / pixel_nm,
        "z_cr": nan, "phot_cr": nan, "bg_cr": nan, "x_sig": nan, "y_sig": nan, "z_sig": nan, "phot_sig": nan,
        "bg_sig": nan})


def decode_csv_preamble(pixel_nm: float) -> str:
    """The three comment lines DECODE's ``load_csv`` skips and parses (its meta: px units and size)."""
    meta = json.dumps({"xy_unit": "px", "px_size": [float(pixel_nm), float(pixel_nm)]})
    return f"# DECODE EmitterSet\n# {json.dumps({'version': 'factory'})}\n# {meta}\n"
