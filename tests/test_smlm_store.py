"""``factory generate --mode smlm``: the SMLM stage in the same plan / make / commit pipeline, with its
guarantees (determinism across workers and n, resume to the same bytes, verify), its layout (frames,
kde, hr, emitter parts, camera maps), its query join and its PyTorch stream, on a real local Ray."""
from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import uncommit
from factory import query
from factory.cli import app
from factory.data import FrameConfig, FrameDataset, FrameNormalization
from factory.diffusion import checkpoint
from factory.diffusion.kinds import ModelKind
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig, Product
from factory.smlm import CameraMaps, SmlmParams
from factory.store import Store, schemas
from factory.structures import StructureConfig, StructureKind

runner = CliRunner()
SIMULATE = StructureConfig(kind=StructureKind.simulate)


def smlm_config(tmp_path, **changes) -> str:
    d = {"schema_version": 1, "downsample": 4, "n_frames": 6, "kde_sigma_nm": 20.0, "labels_per_um2": 300.0,
         "k_on_per_s": 2.0, "k_off_per_s": 20.0, "k_bleach_per_s": 0.0, "frame_time_ms": 20.0,
         "brightness_photons": [1000, 3000], **changes}
    path = tmp_path / f"smlm-{len(list(tmp_path.glob('smlm-*')))}.json"
    path.write_text(json.dumps(d))
    return str(path)


def config(out, degradation, **changes) -> GenerateConfig:
    base = dict(n=6, out=out, structure=SIMULATE, product=Product.smlm, degradation=degradation, batch_size=2,
                shard_size=2, seed=4, hr_size=32)
    return GenerateConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def made(ray_local, tmp_path_factory):
    d = tmp_path_factory.mktemp("smlm")
    cfg = smlm_config(d)
    a = generate(config(d / "a.zarr", cfg), ClusterConfig(workers=2))
    b = generate(config(d / "b.zarr", cfg, n=4), ClusterConfig(workers=1))
    assert a.status == b.status == "complete"
    return d, cfg


def test_the_store_holds_frames_kde_hr_and_emitters_that_agree(made):
    d, _ = made
    store = Store.open(d / "a.zarr")
    assert store.product == "smlm" and store.spec.frames == 6
    assert {n: a.sample_shape for n, a in store.arrays.items()} == {"hr": (32, 32), "frames": (6, 8, 8), "kde": (6, 32, 32)}
    manifest = store.manifest()
    assert manifest.schema.equals(schemas.manifest_schema("smlm"), check_metadata=False)
    emitters = duckdb.sql(f"SELECT * FROM read_parquet('{d / 'a.zarr' / 'emitters' / '*.parquet'}')").to_arrow_table()
    assert emitters.num_rows == sum(manifest.column("n_emitter_frames").to_pylist()) > 0
    for k in range(store.num_shards):
        kde = store.read_shard("kde", k)  # (2, 6, 32, 32)
        for j, i in enumerate(store.spec.shard_ids(k)):
            rows = emitters.filter(pa.array(np.asarray(emitters.column("sample_id")) == i))
            per_frame = np.bincount(rows.column("frame").to_numpy(), minlength=6)
            np.testing.assert_allclose(kde[j].sum(axis=(1, 2)), per_frame, atol=0.15 * per_frame.max() + 0.05)
    join = ("SELECT count(*) AS bad FROM (SELECT m.sample_id, count(*) AS n, any_value(m.n_emitter_frames) AS want "
            "FROM emitters e JOIN manifest m USING (sample_id) GROUP BY m.sample_id HAVING n != want)")
    assert query.run(store, join).column("bad").to_pylist() == [0]
    r = runner.invoke(app, ["query", str(d / "a.zarr"), join, "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines() == ['"bad"', "0"]  # pyarrow CSV quotes names
    assert runner.invoke(app, ["verify", str(d / "a.zarr")]).exit_code == 0


def test_samples_do_not_depend_on_workers_or_n(made):
    d, _ = made
    a, b = Store.open(d / "a.zarr"), Store.open(d / "b.zarr")
    for name in ("hr", "frames", "kde"):
        for k in range(b.num_shards):
            np.testing.assert_array_equal(a.read_shard(name, k), b.read_shard(name, k))
    cols = ["sample_id", "frames_checksum", "kde_checksum", "labels_per_um2", "k_on_per_s", "n_emitter_frames"]
    assert a.manifest(cols).slice(0, 4).equals(b.manifest(cols))


def test_a_resumed_store_equals_the_uninterrupted_one(made, tmp_path):
    d, cfg = made
    copy = tmp_path / "r.zarr"
    shutil.copytree(d / "a.zarr", copy)
    uncommit(copy, [0, 2])
    result = generate(config(copy, cfg), ClusterConfig(workers=1))
    assert result.status == "complete" and result.generated == 4 and result.skipped == 2
    a, r = Store.open(d / "a.zarr"), Store.open(copy)
    for name in ("frames", "kde"):
        for k in range(3):
            assert (copy / name / "c" / str(k) / "0" / "0" / "0").read_bytes() == \
                (d / "a.zarr" / name / "c" / str(k) / "0" / "0" / "0").read_bytes()
    assert r.manifest(["frames_checksum", "kde_checksum"]).equals(a.manifest(["frames_checksum", "kde_checksum"]))
    for k in (0, 2):
        assert (copy / "emitters" / f"part-{k:06d}.parquet").exists()


def test_frames_stream_as_photo_electrons_with_their_kde(made):
    d, _ = made
    store = Store.open(d / "a.zarr")
    ds = FrameDataset(FrameConfig(d / "a.zarr", shuffle=False, fields=("sample_id",)))
    items = list(ds)
    assert len(items) == ds.num_frames == 6 * 6
    frames, row = store.read_shard("frames", 1), store.manifest_part(1).to_pylist()[0]
    frame, kde, f = items[2 * 6 + 3]  # sample 2 (shard 1, first), frame 3
    assert f == {"sample_id": 2, "frame": 3}
    want = (frames[0, 3].astype(np.float64) - row["offset_adu"]) * row["gain_e_per_adu"] / row["em_gain"]
    np.testing.assert_allclose(frame[0].numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(kde[0].numpy(), store.read_shard("kde", 1)[0, 3])
    raw = list(FrameDataset(FrameConfig(d / "a.zarr", shuffle=False, normalize=FrameNormalization.none, frames=(0,))))
    assert len(raw) == 6 and raw[2][0].max() == float(frames[0, 0].max())


def test_scmos_maps_are_stored_and_used_and_an_empty_kde_is_data(ray_local, tmp_path):
    cfg = smlm_config(tmp_path, camera_maps="scmos", offset_map_std_adu=5.0, k_on_per_s=0.0)  # no emitter ever on
    out = tmp_path / "s.zarr"
    assert generate(config(out, cfg, n=2), ClusterConfig(workers=1)).status == "complete"
    store = Store.open(out)
    import zarr

    group = zarr.open_group(str(out / "camera"), mode="r")
    maps = CameraMaps.from_arrays({k: group[k][...] for k in group.array_keys()})
    assert maps.shape == (8, 8) and float(np.std(maps.offset_shift_adu)) > 1.0
    assert store.read_shard("kde", 0).max() == 0.0  # all-zero KDE chunks are written, read and checked
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    frame, _ = next(iter(FrameDataset(FrameConfig(out, shuffle=False, frames=(0,)))))
    row = store.manifest_part(0).to_pylist()[0]
    camera = maps.camera_model(SmlmParams.from_record(row))
    want = (store.read_shard("frames", 0)[0, 0] - camera.offset_adu) * camera.gain_e_per_adu / camera.em_gain
    np.testing.assert_allclose(frame[0].numpy(), want, rtol=1e-5)  # per-pixel offset and gain


@pytest.mark.parametrize("changes, message", [
    ({"k_on_per_s": -1.0}, "k_on_per_s"),
    ({"n_frames": 0}, "n_frames"),
    ({"kde_sigma_nm": 0.0}, "kde_sigma_nm"),
])
def test_bad_smlm_config_is_one_sentence_exit_2(tmp_path, changes, message):
    args = ["generate", "--mode", "smlm", "--structure", "simulate", "--n", "2", "--out", str(tmp_path / "x.zarr"),
            "--degradation", smlm_config(tmp_path, **changes), "--hr-size", "32"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in r.output and r.output.count("error:") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "x.zarr").exists()
    r = runner.invoke(app, args[:-4] + ["--frames", "0", "--hr-size", "32"])
    assert r.exit_code == 2 and "--frames" in r.output


def test_exports_for_localization_tools_and_the_preview(made, tmp_path):
    import csv

    import tifffile
    from PIL import Image

    from factory import images

    d, _ = made
    store = Store.open(d / "a.zarr")
    emitters = query.run(store, "SELECT * FROM emitters WHERE sample_id = 3 ORDER BY frame, emitter_id")
    r = runner.invoke(app, ["export", str(d / "a.zarr"), "--format", "thunderstorm", "--out", str(tmp_path / "ts"),
                            "--where", "sample_id = 3"])
    assert r.exit_code == 0, r.output
    stack = images.read_stack(tmp_path / "ts" / "000003.tif")
    assert stack.data.shape == (6, 8, 8) and stack.pixel_nm == pytest.approx(160.0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ts" / "000003.tif"), store.read_samples("frames", [3])[0])
    rows = list(csv.DictReader(open(tmp_path / "ts" / "000003.csv")))
    assert list(rows[0]) == ["id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]", "offset [photon]",
                             "bkgstd [photon]", "uncertainty [nm]"]
    assert len(rows) == emitters.num_rows and {int(r["frame"]) for r in rows} <= set(range(1, 7))  # frames from 1
    np.testing.assert_allclose(sorted(float(r["x [nm]"]) for r in rows), sorted(emitters.column("x_nm").to_pylist()))
    r = runner.invoke(app, ["export", str(d / "a.zarr"), "--format", "decode", "--out", str(tmp_path / "dc"),
                            "--where", "sample_id = 3"])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "dc" / "000003.decode.csv").read_text().splitlines()
    assert lines[0] == "# DECODE EmitterSet" and '"px_size": [160.0, 160.0]' in lines[2]
    decode = list(csv.DictReader(lines[3:]))
    x0 = emitters.column("x_nm").to_numpy()[0] / 160.0 - 0.5  # DECODE's y is our x, pixel centres at integers
    assert float(decode[0]["y"]) == pytest.approx(x0) and int(decode[0]["frame_ix"]) == emitters.column("frame")[0].as_py()
    r = runner.invoke(app, ["export", str(d / "a.zarr"), "--format", "npz", "--out", str(tmp_path / "np")])
    assert r.exit_code == 2 and "does not apply to a smlm store" in r.output
    r = runner.invoke(app, ["preview", str(d / "a.zarr"), "--out", str(tmp_path / "p.png"), "--n", "3"])
    assert r.exit_code == 0, r.output
    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 120) & (img[..., 2] < 120)  # the circles around true emitters
    assert red.sum() > 20 and img.shape[1] >= 3 * 3 * 160


def test_train_smlm_streams_the_store_and_restore_localizes_its_frames(made, tmp_path):
    """The conditional model trains on the store's (frame, KDE) pairs and restores an exported frame stack."""
    import csv

    from factory.diffusion.smlm_data import store_source

    d, _ = made
    train, held = store_source(str(d / "a.zarr")), store_source(str(d / "a.zarr"), holdout=True)
    assert len(train) == 4 * 6 and len(held) == 2 * 6 and train.geometry.upscale == 4
    pair = train[7]  # sample 1, frame 1
    store = Store.open(d / "a.zarr")
    np.testing.assert_array_equal(pair.kde, store.read_shard("kde", 0)[1, 1])
    rows = query.run(store, "SELECT x_nm, y_nm FROM emitters WHERE sample_id = 1 AND frame = 1")
    assert len(pair.emitters_nm) == rows.num_rows
    model = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train-smlm", "--store", str(d / "a.zarr"), "--out", str(model), "--preset", "tiny",
                            "--steps", "4", "--batch-size", "4", "--checkpoint-every", "4", "--device", "cpu"])
    assert r.exit_code == 0 and model.exists(), r.output
    n_rows = len(checkpoint.load(model, kind=ModelKind.sr3).card["schedule_search"])  # the search reports every candidate
    assert f"schedule search {n_rows}/{n_rows}: " in r.output and "step 4/4" in r.output
    r = runner.invoke(app, ["export", str(d / "a.zarr"), "--format", "thunderstorm", "--out", str(tmp_path / "ts"),
                            "--where", "sample_id = 5"])
    assert r.exit_code == 0
    out = tmp_path / "restored.tif"
    r = runner.invoke(app, ["restore", str(tmp_path / "ts" / "000005.tif"), "--model", str(model), "--samples", "2",
                            "--out", str(out), "--offset-adu", "100", "--gain-e-per-adu", "0.5", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert out.exists() and (tmp_path / "restored_std.tif").exists()
    header = next(csv.reader(open(tmp_path / "restored.csv")))
    assert header[:4] == ["id", "frame", "x [nm]", "y [nm]"]
