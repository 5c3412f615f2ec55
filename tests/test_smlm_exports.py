"""The emitter table's schema and the ThunderSTORM / DECODE tables (columns, origins, units)."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pytest

from factory.paths import SCHEMAS_DIR
from factory.smlm.exports import (THUNDERSTORM_COLUMNS, decode_csv_preamble, decode_table, emitters_schema,
                                  emitters_table, thunderstorm_table)

PIXEL_NM = 160.0


@pytest.fixture
def table() -> pa.Table:
    """Three rows: emitter 4 at the centre of camera pixel (row 2, col 5) in frames 0 and 1; emitter 9 elsewhere."""
    return emitters_table({
        "sample_id": np.array([7, 7, 7]), "frame": np.array([0, 0, 1]), "emitter_id": np.array([4, 9, 4]),
        "x_nm": np.array([5.5, 1.25, 5.5]) * PIXEL_NM, "y_nm": np.array([2.5, 3.0, 2.5]) * PIXEL_NM,
        "photons": np.array([1000.0, 250.0, 400.0]), "background": np.array([16.0, 25.0, 16.0]),
        "on_fraction": np.array([1.0, 0.25, 0.4]), "crlb_x_nm": np.array([6.0, 20.0, 9.0]),
        "crlb_y_nm": np.array([8.0, 20.0, 12.0])})


def test_schema_matches_its_json_with_units():
    doc = json.loads((SCHEMAS_DIR / "emitters.v1.json").read_text())
    schema = emitters_schema()
    assert schema.names == [f["name"] for f in doc["fields"]] == [
        "sample_id", "frame", "emitter_id", "x_nm", "y_nm", "photons", "background", "on_fraction", "crlb_x_nm",
        "crlb_y_nm"]
    assert schema.field("x_nm").metadata[b"unit"] == b"nm" and schema.field("frame").type == pa.int32()
    assert all(not f.nullable for f in schema)


def test_thunderstorm_table_has_its_columns_one_based_frames_and_our_origin(table):
    ts = thunderstorm_table(table, psf_sigma_nm=110.0)
    assert tuple(ts.column_names) == THUNDERSTORM_COLUMNS == (
        "id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]", "offset [photon]", "bkgstd [photon]",
        "uncertainty [nm]")
    assert ts.column("id").to_pylist() == [1, 2, 3] and ts.column("frame").to_pylist() == [1, 1, 2]
    # ThunderSTORM's pixel x spans [x, x + 1) px (centre x + 0.5): the centre of column 5 is at 5.5 px
    assert ts.column("x [nm]").to_pylist()[0] == 5.5 * PIXEL_NM and ts.column("y [nm]").to_pylist()[0] == 2.5 * PIXEL_NM
    assert ts.column("sigma [nm]").to_pylist() == [110.0] * 3
    assert ts.column("bkgstd [photon]").to_pylist() == [4.0, 5.0, 4.0]
    assert ts.column("uncertainty [nm]").to_pylist()[0] == pytest.approx(np.sqrt((36 + 64) / 2))
    buf = io.BytesIO()
    pyarrow.csv.write_csv(ts, buf)
    header = buf.getvalue().decode().splitlines()[0]
    assert header == ",".join(f'"{c}"' for c in THUNDERSTORM_COLUMNS)


def test_decode_table_puts_pixel_centres_at_integers_with_x_along_rows(table):
    dc = decode_table(table, PIXEL_NM)
    # the centre of camera pixel (row 2, col 5) is (x, y) = (2, 5) in DECODE's frame[x, y] indexing
    assert dc.column("x").to_pylist()[0] == 2.0 and dc.column("y").to_pylist()[0] == 5.0
    assert dc.column("frame_ix").to_pylist() == [0, 0, 1] and dc.column("id").to_pylist() == [4, 9, 4]
    assert dc.column("x_cr").to_pylist()[0] == 8.0 / PIXEL_NM and dc.column("y_cr").to_pylist()[0] == 6.0 / PIXEL_NM
    for needed in ("x", "y", "z", "phot", "frame_ix", "x_cr", "y_cr", "z_cr", "phot_cr", "bg_cr", "x_sig", "y_sig",
                   "z_sig", "phot_sig", "bg_sig", "bg"):  # decode.utils.emitter_io.load_csv's default mapping, and bg
        assert needed in dc.column_names
    lines = decode_csv_preamble(PIXEL_NM).splitlines()
    assert len(lines) == 3 and all(line.startswith("# ") for line in lines)
    assert json.loads(lines[2][2:]) == {"xy_unit": "px", "px_size": [PIXEL_NM, PIXEL_NM]}
