"""``factory info | verify | preview | export`` through the real CLI over the session's real store
(and damaged copies of it), plus the bad inputs every one of them shares."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from scipy.ndimage import zoom
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.store import Store
from conftest import uncommit

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture
def copy(small_store, tmp_path):
    """A private copy of the session store to damage."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(small_store, dst)
    return dst


def test_info_json_reports_counts_shapes_pixels_model_and_ranges(small_store):
    r = run("info", small_store, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["samples"] == {"committed": 22, "total": 22, "manifest_rows": 22} and info["complete"]
    assert info["shards"]["committed"] == info["shards"]["total"] == 6 and info["shards"]["shard_size"] == 4
    assert {k: info["arrays"]["hr"][k] for k in ("shape", "dtype", "pixel_nm", "path")} == \
        {"shape": [22, 32, 32], "dtype": "float32", "pixel_nm": 20.0, "path": "hr/0"}
    assert info["arrays"]["lr"]["shape"] == [22, 8, 8] and info["arrays"]["lr"]["dtype"] == "uint16" and info["pixel_nm"]["lr"] == 80.0
    assert info["sampler"]["kind"] == "dpmpp" and info["sampler"]["steps"] == 4 and info["structure"]["card"]["preset"] == "tiny"
    assert info["degradation"]["photons"] == {"low": 100.0, "high": 2000.0, "log": True}
    photons = Store.open(small_store).manifest(["photons"]).column("photons").to_numpy()
    assert info["observed"]["photons"] == {"min": photons.min(), "max": photons.max(), "unit": "photons"}
    assert info["schema_version"] == 2 and info["product"] == "pairs" and info["structure"]["kind"] == "ddpm"
    assert info["size_bytes"] > Store.open(small_store).attrs["totals"]["stored_bytes"] > 0
    human = run("info", small_store)
    assert human.exit_code == 0 and "22 committed of 22" in human.stdout and "pixel 20 nm" in human.stdout and "photons" in human.stdout
    assert "normalized density in [0, 1]" in human.stdout and "complete: complete" not in human.stdout  # brackets survive


def test_info_of_an_unfinished_store_lists_missing_shards(copy):
    uncommit(copy, [3])
    info = json.loads(run("info", copy, "--json").stdout)
    assert info["samples"]["committed"] == 18 and info["shards"]["missing"] == [3] and not info["complete"]


def test_verify_passes_a_sound_store(small_store):
    r = run("verify", small_store)
    assert r.exit_code == 0 and r.stdout.startswith("OK: 22 samples in 6 committed shards")


def test_verify_finds_flipped_bytes_in_an_hr_shard_file(copy):
    path = copy / "hr" / "0" / "c" / "2" / "0" / "0"  # zarr shard 2 of hr: samples 8..11
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    r = run("verify", copy)
    assert r.exit_code == 1 and "Traceback" not in r.output
    # zstd may refuse the frame (does not decode) or decode garbage (checksums): both are damage of shard 2
    assert "shard 2: hr data does not decode" in r.stdout or "sample 8: hr checksum" in r.stdout or "sample 9: hr checksum" in r.stdout
    assert "DAMAGED" in r.output and "shard 1" not in r.stdout and f"to fix: factory repair {copy}" in r.output


def test_verify_finds_a_changed_sample_and_a_deleted_manifest_part(copy):
    arr = zarr.open_array(str(copy / "lr" / "0"), mode="r+")
    arr[4:8] = arr[4:8] + np.uint16(1) * (np.arange(4) == 1)[:, None, None]  # whole shard rewritten, sample 5 changed
    (copy / "manifest" / "part-000004.parquet").unlink()
    r = run("verify", copy)
    assert r.exit_code == 1
    assert "damaged: sample 5: lr checksum does not match the manifest" in r.stdout
    assert "missing: 1 shard(s): no manifest part for shards 4 although the store is marked complete" in r.stdout
    assert "shard 4: hr data written but no manifest part (its part was lost)" in r.stdout


def test_verify_of_an_interrupted_run_needs_allow_incomplete(copy):
    uncommit(copy, [5])  # as before finalize: shard 5 not committed yet, a temp file left over
    (copy / "manifest" / ".part-000005.parquet.dead.tmp").write_bytes(b"half")
    r = run("verify", copy)
    assert r.exit_code == 1 and "incomplete: 1 shard(s): not committed yet: shards 5" in r.stdout and "stray:" in r.stdout
    assert "INCOMPLETE" in r.output and "DAMAGED" not in r.output and "rerun the factory generate command" in r.output
    r = run("verify", copy, "--allow-incomplete")
    assert r.exit_code == 0 and r.stdout.startswith("OK: 20 samples in 5 committed shards") and "note: stray" in r.output


def test_verify_finds_duplicate_hr_images_and_extra_parts(copy):
    shutil.copy(copy / "manifest" / "part-000000.parquet", copy / "manifest" / "part-000009.parquet")  # beyond 6 shards
    hr = zarr.open_array(str(copy / "hr" / "0"), mode="r+")
    block = hr[0:4]
    block[1] = block[0]
    hr[0:4] = block  # whole zarr shard rewritten: sample 1 = sample 0
    r = run("verify", copy)
    assert r.exit_code == 1
    assert "extra: manifest/part-000009.parquet" in r.stdout and "sample 1: hr checksum" in r.stdout


def test_preview_writes_a_png_montage_with_the_selected_pairs(small_store, tmp_path):
    out = tmp_path / "grid.png"
    r = run("preview", small_store, "--out", out, "--n", 3, "--where", "photons > 300")
    assert r.exit_code == 0, r.output
    want = [i for i, p in enumerate(Store.open(small_store).manifest(["photons"]).column("photons").to_pylist()) if p > 300][:3]
    assert f"3 sample(s), ids {', '.join(map(str, want))}" in r.output
    img = np.asarray(Image.open(out).convert("L"))  # 3 pairs of two 160 px tiles in one row, caption below
    assert img.shape[1] >= 3 * 2 * 160 and img.shape[0] > 160 and img.std() > 20
    assert run("preview", small_store, "--out", out).exit_code == 2  # exists: needs --overwrite
    r = run("preview", small_store, "--out", tmp_path / "none.png", "--where", "photons < 0")
    assert r.exit_code == 2 and "no samples" in r.output


def test_export_tiff_stacks_carry_pixel_sizes_and_the_manifest_rows(small_store, tmp_path):
    store = Store.open(small_store)
    r = run("export", small_store, "--format", "tiff", "--out", tmp_path / "t", "--where", "photons < 300")
    assert r.exit_code == 0, r.output
    ids = [int(line.split(",")[0]) for line in (tmp_path / "t" / "samples.csv").read_text().splitlines()[1:]]
    assert ids and all(p < 300 for p in store.manifest(["photons"]).column("photons").to_numpy()[ids])
    lr, hr = images.read_stack(tmp_path / "t" / "lr.tif"), images.read_stack(tmp_path / "t" / "hr.tif")
    assert lr.pixel_nm == pytest.approx(80.0) and hr.pixel_nm == pytest.approx(20.0)
    assert tifffile.imread(tmp_path / "t" / "lr.tif").dtype == np.uint16
    np.testing.assert_array_equal(hr.data.reshape(-1, 32, 32), store.hr[ids])
    np.testing.assert_array_equal(lr.data.reshape(-1, 8, 8), store.lr[ids].astype(np.float32))
    r = run("export", small_store, "--format", "tiff", "--per-sample", "--out", tmp_path / "p", "--where", "sample_id IN (3, 17)")
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "p" / "hr").iterdir()) == ["000003.tif", "000017.tif"]
    assert images.read_stack(tmp_path / "p" / "lr" / "000017.tif").pixel_nm == pytest.approx(80.0)


def test_export_npz_is_csbdeep_training_data(small_store, tmp_path):
    store = Store.open(small_store)
    r = run("export", small_store, "--format", "npz", "--out", tmp_path / "n", "--normalize", "camera")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "n" / "pairs.npz") as f:  # what csbdeep.io.load_training_data reads
        X, Y, axes = f["X"], f["Y"], str(f["axes"])
    assert axes == "SCYX" and X.shape == Y.shape == (22, 1, 32, 32) and X.dtype == Y.dtype == np.float32
    np.testing.assert_array_equal(Y[:, 0], store.hr[:])
    m = store.manifest(["offset_adu", "gain_e_per_adu", "em_gain"]).to_pydict()
    electrons = (store.lr[7].astype(np.float64) - m["offset_adu"][7]) * m["gain_e_per_adu"][7] / m["em_gain"][7]
    # default upsampling is bilinear with half-pixel centres: scipy's zoom on the pixel grid (grid_mode), edges extended
    bilinear = zoom(electrons, 4, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(X[7, 0], bilinear, rtol=1e-5, atol=1e-4)
    r = run("export", small_store, "--format", "npz", "--out", tmp_path / "n")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = run("export", small_store, "--format", "npz", "--out", tmp_path / "n", "--overwrite", "--where", "shard = 5",
            "--upsample", "nearest")
    assert r.exit_code == 0
    with np.load(tmp_path / "n" / "pairs.npz") as f:
        assert f["X"].shape == (2, 1, 32, 32)
        lo, hi = np.percentile(f["X"][:, 0, ::4, ::4], (1.0, 99.8), axis=(1, 2))  # percentile normalization of LR
        np.testing.assert_array_equal(f["X"][:, 0], np.kron(f["X"][:, 0, ::4, ::4], np.ones((1, 4, 4))))  # nearest
        np.testing.assert_allclose(lo, 0.0, atol=1e-5) and np.testing.assert_allclose(hi, 1.0, atol=1e-5)


def _newer(copy):
    doc = json.loads((copy / "zarr.json").read_text())
    doc["attributes"]["factory"]["schema_version"] = 99
    (copy / "zarr.json").write_text(json.dumps(doc))
    return copy


@pytest.mark.parametrize("command", [["info"], ["verify"], ["preview", "--out", "{tmp}/x.png"],
                                     ["export", "--format", "tiff", "--out", "{tmp}/x"], ["query", "SELECT 1"]])
def test_bad_inputs_are_one_sentence_exit_2(command, small_store, copy, tmp_path):
    name, *rest = command
    rest = [a.replace("{tmp}", str(tmp_path)) for a in rest]
    not_a_store = tmp_path / "plain"
    not_a_store.mkdir()
    cases = [(not_a_store, "is not a factory store"), (tmp_path / "absent.zarr", "no such store"),
             (_newer(copy), "schema version 99, newer than this factory reads")]
    for store, message in cases:
        r = run(name, store, *rest)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    if name in ("preview", "export"):
        r = run(name, small_store, *rest, "--where", "brightness < 3")
        assert r.exit_code == 2 and 'Referenced column "brightness" not found' in r.output
