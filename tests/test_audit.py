"""``factory audit``: planted flipped / rotated copies of training patches score ~1, independent
images do not; the audit table lands in the store and ``factory query`` joins it. The store is
built here without Ray (conftest.build_store: the real pairs stage and writer)."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from factory import images
from factory.audit import AuditConfig, Reference, audit, best_match, training_reference
from factory.cli import app
from factory.diffusion.quality import max_ncc
from factory.errors import FactoryError
from factory.store import Store
from conftest import build_store

runner = CliRunner()
S = 16  # HR side (px at 20 nm)
PLANTED = {1: (8, 12, 5), 6: (20, 0, 2)}  # sample id -> (y, x) on the stride-4 grid of the binned image, dihedral view


def filaments(shape, seed) -> np.ndarray:
    """Random smooth line structure, float32 (a stand-in for a microtubule image)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for _ in range(10):
        y0, x0, ang = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(0, np.pi)
        t = np.linspace(-200, 200, 2000)
        y, x = (y0 + t * np.sin(ang)).astype(int), (x0 + t * np.cos(ang)).astype(int)
        ok = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
        img[y[ok], x[ok]] += 100
    return gaussian_filter(img, 1.5) + rng.random(shape).astype(np.float32)


@pytest.fixture(scope="module")
def training_tif(tmp_path_factory):
    """A 128 x 128 training image at 10 nm: binned x2 to the store's 20 nm -> 64 x 64, 13 x 13 patches of 16 at stride 4."""
    path = tmp_path_factory.mktemp("train") / "train.tif"
    images.write_tiff(path, filaments((128, 128), seed=0), pixel_nm=10.0)
    return path


@pytest.fixture(scope="module")
def binned(training_tif):
    img, _ = images.normalize_unit(images.bin_sum(images.read_stack(training_tif).data[0], 2))
    return img  # (64, 64) in [0, 1], what audit compares against


@pytest.fixture(scope="module")
def store(tmp_path_factory, binned):
    """10 samples (shards of 4): independent filament images, except planted flipped/rotated training patches."""
    hr = np.stack([images.normalize_unit(filaments((S, S), seed=100 + i))[0] for i in range(10)])  # (10, S, S)
    for i, (y, x, view) in PLANTED.items():
        hr[i] = images.dihedral8(binned[y:y + S, x:x + S])[view]
    return build_store(tmp_path_factory.mktemp("audit") / "s.zarr", hr).loc.root


def test_planted_copies_score_one_and_independent_images_do_not(store, training_tif):
    result = audit(Store.open(store), AuditConfig(train=(training_tif,)))
    assert result.samples == 10 and result.patches == 13 * 13
    table = pq.read_table(result.path).to_pydict()
    assert table["sample_id"] == list(range(10))
    for i, score in enumerate(table["max_ncc"]):
        if i in PLANTED:
            y, x, _ = PLANTED[i]
            assert score == pytest.approx(1.0, abs=1e-4)
            assert (table["best_y"][i], table["best_x"][i]) == (y, x) and table["best_patch"][i] == (y // 4) * 13 + x // 4
            assert table["best_file"][i] == "train.tif"
        else:
            assert score < 0.8
    assert {i for i, _ in result.top[:2]} == set(PLANTED) and result.max_ncc == pytest.approx(1.0, abs=1e-4)


def test_best_match_agrees_with_quality_max_ncc_for_any_chunking(training_tif):
    ref = training_reference(AuditConfig(train=(training_tif,)), S, 20.0)
    rng = np.random.default_rng(1)
    generated = rng.random((5, S, S)).astype(np.float32)
    generated[2] = np.rot90(ref.patches(40, 41)[0]) * 3 + 1  # an affine copy: NCC is scale- and offset-free
    expected = max_ncc(generated, ref.patches(0, len(ref.origins)))
    for chunk in (7, 64, 10_000):
        score, index = best_match(generated, ref, chunk)
        np.testing.assert_allclose(score, expected, atol=1e-5)
        assert index[2] == 40


def test_cli_writes_the_audit_table_and_query_joins_it(store, training_tif):
    r = runner.invoke(app, ["audit", str(store), "--train", str(training_tif), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "audited 10 samples against 169 training patches: max NCC 1.000" in r.stdout
    q = runner.invoke(app, ["query", str(store), "--format", "csv",
                            "SELECT m.sample_id, a.max_ncc FROM manifest m JOIN audit a USING (sample_id) ORDER BY a.max_ncc DESC LIMIT 2"])
    assert q.exit_code == 0, q.output
    assert sorted(int(line.split(",")[0]) for line in q.stdout.splitlines()[1:]) == sorted(PLANTED)
    again = runner.invoke(app, ["audit", str(store), "--train", str(training_tif)])
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
    assert runner.invoke(app, ["verify", str(store)]).exit_code == 0  # the audit folder is not store damage


def test_bad_training_inputs_are_one_sentence(store, tmp_path):
    unknown = tmp_path / "nopixel.tif"
    images.write_tiff(unknown, np.random.default_rng(1).random((64, 64), dtype=np.float32), pixel_nm=None)
    odd = tmp_path / "odd.tif"
    images.write_tiff(odd, np.ones((64, 64), np.float32), pixel_nm=15.0)
    small = tmp_path / "small.tif"
    images.write_tiff(small, np.random.default_rng(0).random((8, 8), dtype=np.float32), pixel_nm=20.0)
    zeros, nans = tmp_path / "zeros.tif", tmp_path / "nans.tif"
    images.write_tiff(zeros, np.zeros((64, 64), np.float32), pixel_nm=20.0)
    images.write_tiff(nans, np.full((64, 64), np.nan, np.float32), pixel_nm=20.0)
    cases = [([unknown], "pixel size unknown; pass --data-pixel-nm"), ([odd], "not an integer multiple"),
             ([small], "no training image is at least 16 x 16"), ([tmp_path / "absent.tif"], "no such file"),
             ([zeros], r"is constant \(all pixels 0\).*a false all-clear"), ([nans], "contains NaN or infinite pixels")]
    for train, message in cases:
        with pytest.raises(FactoryError, match=message):
            audit(Store.open(store), AuditConfig(train=tuple(train), overwrite=True))
    r = runner.invoke(app, ["audit", str(store), "--train", str(unknown), "--data-pixel-nm", "10", "--overwrite"])
    assert r.exit_code == 0 and "against 169 training patches" not in r.stdout  # 64 px at 10 nm -> 32 px: 25 patches
    assert "against 25 training patches" in r.stdout
    r = runner.invoke(app, ["audit", str(store), "--train", str(unknown), "--data-pixel-nm", "0", "--overwrite"])
    assert r.exit_code == 2 and "--data-pixel-nm must be > 0 nm" in r.stderr and "Traceback" not in r.output
    assert isinstance(training_reference(AuditConfig(train=(small,)), 8, 20.0), Reference)
