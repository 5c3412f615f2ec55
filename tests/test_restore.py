"""``factory restore``: outputs and their units, determinism for a seed, K samples that differ, bad input in one sentence."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.diffusion import checkpoint
from factory.diffusion.kinds import ModelKind
from factory.diffusion.posterior import sample_kde
from factory.diffusion.restore import RestoreConfig, restore
from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry
from factory.seeding import restore_generator

from conftest import SPOTS_GEOMETRY

runner = CliRunner()
GEOMETRY = SmlmGeometry(**SPOTS_GEOMETRY)
HEADER = ["id", "frame", "x [nm]", "y [nm]", "intensity [photon]", "uncertainty [nm]"]


@pytest.fixture(scope="module")
def frames_tif(tmp_path_factory):
    """4 frames of 8x8 px at 100 nm in ADU for the default camera (offset 100 ADU, 0.5 e-/ADU)."""
    spots = GaussianSpots(4, 5, GEOMETRY)
    electrons = np.stack([spots[i].frame_e for i in range(4)])
    adu = np.round(electrons / 0.5 + 100).astype(np.uint16)
    path = tmp_path_factory.mktemp("frames") / "frames.tif"
    images.write_tiff(path, adu, pixel_nm=100.0)
    return path


def restore_cli(*args: str):
    return runner.invoke(app, ["restore", *args])


def _outputs(out):
    return out, out.with_name(out.stem + "_std.tif"), out.with_suffix(".csv")


def test_cli_restore_writes_mean_std_and_a_thunderstorm_table(frames_tif, tiny_sr3, tmp_path):
    out = tmp_path / "r.tif"
    r = restore_cli(str(frames_tif), "--model", str(tiny_sr3), "--samples", "3", "--out", str(out), "--seed", "1")
    assert r.exit_code == 0, r.output
    assert "frames/s" in r.output and "restore K=3: 4/4 frames" in r.output  # a plain progress line in a log file
    mean, std, table = _outputs(out)
    m, s = images.read_stack(mean), images.read_stack(std)
    assert m.data.shape == s.data.shape == (4, 32, 32) and m.data.dtype == np.float32
    assert m.pixel_nm == pytest.approx(25.0) and s.pixel_nm == pytest.approx(25.0)  # HR pixel size travels with them
    assert (m.data >= 0).all() and (s.data >= 0).all() and s.data.max() > 0
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == HEADER and table.read_text().startswith('"id","frame","x [nm]"')
    body = np.array([[float(v) for v in row] for row in rows[1:]])  # (n, 6)
    if len(body):
        assert body[:, 0].tolist() == list(range(1, len(body) + 1))  # ids from 1
        assert set(body[:, 1].astype(int)) <= {1, 2, 3, 4}  # frames counted from 1, as ThunderSTORM does
        assert ((0 <= body[:, 2]) & (body[:, 2] <= 800) & (0 <= body[:, 3]) & (body[:, 3] <= 800)).all()  # inside 8 x 100 nm


def test_cli_restore_is_deterministic_for_a_seed(frames_tif, tiny_sr3, tmp_path):
    args = [str(frames_tif), "--model", str(tiny_sr3), "--samples", "2", "--seed", "3"]
    for name in ("a", "b"):
        assert restore_cli(*args, "--out", str(tmp_path / f"{name}.tif")).exit_code == 0
    for a, b in zip(_outputs(tmp_path / "a.tif"), _outputs(tmp_path / "b.tif")):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert restore_cli(*args[:-1], "4", "--out", str(tmp_path / "c.tif")).exit_code == 0
    assert not np.array_equal(images.read_stack(tmp_path / "a.tif").data, images.read_stack(tmp_path / "c.tif").data)


def test_k_samples_of_one_frame_differ_and_a_frame_does_not_depend_on_its_neighbours(tiny_sr3):
    ck = checkpoint.load(tiny_sr3, kind=ModelKind.sr3)
    spots = GaussianSpots(3, 5, GEOMETRY)
    frames = np.stack([spots[i].frame_e for i in range(3)])  # (3, 8, 8) photo-electrons
    one = torch.from_numpy(np.repeat(frames[1:2], 4, axis=0))
    samples = sample_kde(ck.model, ck.config, one, [restore_generator(0, 1, k) for k in range(4)])  # (4, 32, 32)
    for i in range(4):
        for j in range(i):
            assert np.abs(samples[i] - samples[j]).max() > 1e-3
    together = list(restore(ck, frames, RestoreConfig(samples=4, seed=0, batch_size=5)))
    assert [r.frame for r in together] == [0, 1, 2]
    assert np.abs(together[1].mean - samples.mean(axis=0)).max() < 1e-5  # rows batched 5 at a time vs 4: same samples
    r = together[1]
    assert r.std.shape == (32, 32) and (r.std > 0).any()
    assert np.allclose(r.std, samples.std(axis=0, ddof=1), atol=1e-5)
    neighbours = frames.copy()
    neighbours[[0, 2]] = frames[[2, 0]] * 3  # other frames around frame 1
    swapped = list(restore(ck, neighbours, RestoreConfig(samples=4, seed=0, batch_size=5)))
    assert np.abs(swapped[1].mean - together[1].mean).max() < 1e-5
    assert np.abs(swapped[0].mean - together[0].mean).max() > 1e-3  # while the frames that changed did change


@pytest.mark.parametrize("case, words", [
    ("other_kind", "is an unconditional DDPM"),
    ("k0", "--samples must be at least 1, got 0"),
    ("seed", "--seed must be an integer >= 0"),
    ("exists", "already exists"),
    ("four_d", "expected a 2-D image or an (N, H, W) stack"),
    ("nan", "NaN or infinite"),
    ("pixel", "has 160 nm pixels but the model works on 100 nm"),
    ("camera_range", "is a range"),
    ("steps", "--steps must be an integer between 1 and"),
    ("missing", "no such file"),
])
def test_cli_restore_bad_input_is_one_sentence(case, words, frames_tif, tiny_sr3, tiny_model, tmp_path):
    frames, model, extra = frames_tif, tiny_sr3, []
    out = tmp_path / "o.tif"
    if case == "other_kind":
        model = tiny_model
    elif case == "k0":
        extra = ["--samples", "0"]
    elif case == "seed":
        extra = ["--seed", "-1"]
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "four_d":
        import tifffile

        frames = tmp_path / "frames.tif"
        tifffile.imwrite(frames, np.zeros((2, 3, 8, 8), np.uint16), photometric="minisblack", metadata={"axes": "TZYX"}, imagej=True)
    elif case == "nan":
        frames = tmp_path / "nan.tif"
        images.write_tiff(frames, np.full((2, 8, 8), np.nan, np.float32), pixel_nm=100.0)
    elif case == "pixel":
        frames = tmp_path / "p.tif"
        images.write_tiff(frames, images.read_stack(frames_tif).data, pixel_nm=160.0)
    elif case == "camera_range":
        cam = tmp_path / "cam.json"
        cam.write_text(json.dumps({"schema_version": 1, "gain_e_per_adu": [0.4, 0.6]}))
        extra = ["--camera", str(cam)]
    elif case == "steps":
        extra = ["--steps", "1000"]
    elif case == "missing":
        frames = tmp_path / "none.tif"
    r = restore_cli(str(frames), "--model", str(model), "--samples", extra[1] if case == "k0" else "2", "--out", str(out),
                    *[a for a in extra if case != "k0"])
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output, r.output
    assert r.output.strip().startswith("error:") and r.output.count("error:") == 1
    mean, std, table = _outputs(out)
    assert out.read_bytes() == b"keep me" if case == "exists" else not out.exists()
    assert not std.exists() and not table.exists()
