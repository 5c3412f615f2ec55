"""``factory generate --structure ddpm|simulate|images``: any structure source through the one pipeline
and store format, recorded in the run spec and the manifest; sample i depends only on (seed, i)."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.diffusion.quality import max_ncc_sliding
from factory.pipeline.driver import generate
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.simulate import SimulationConfig, simulate_image
from factory.seeding import structure_rng
from factory.store import Store
from factory.structures import StructureConfig, StructureKind

runner = CliRunner()


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
    """Two 'user' HR images at 10 nm (they are binned x2 to a 20 nm store)."""
    d = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        img = np.zeros((96, 96), np.float32)
        for _ in range(8):
            y, x = rng.integers(0, 96, 2)
            img[y, :] += rng.uniform(0.5, 1.0)
            img[:, x] += rng.uniform(0.5, 1.0)
        images.write_tiff(d / name, img + rng.random((96, 96), dtype=np.float32) * 0.1, pixel_nm=10.0)
    return d


def test_simulate_source_makes_the_mathematical_model_and_records_it(ray_local, tmp_path):
    cfg = GenerateConfig(n=5, out=tmp_path / "sim.zarr", structure=StructureConfig(kind=StructureKind.simulate),
                         shard_size=2, batch_size=2, seed=9, hr_size=32, hr_pixel_nm=40.0)
    assert generate(cfg, ClusterConfig(workers=1)).status == "complete"
    store = Store.open(tmp_path / "sim.zarr")
    assert store.spec.structure["kind"] == "simulate" and store.spec.model_id is None
    m = store.manifest(["structure", "structure_id", "model_id", "sampler"]).to_pylist()
    assert {r["structure"] for r in m} == {"simulate"} and {r["model_id"] for r in m} == {None}
    assert {r["structure_id"] for r in m} == {store.spec.structure["id"]}
    hr = np.concatenate([store.read_shard("hr", k) for k in range(3)])
    want = simulate_image(SimulationConfig(size_px=32, pixel_nm=40.0), structure_rng(9, 3))  # an independent call
    np.testing.assert_array_equal(hr[3], want)
    assert runner.invoke(app, ["verify", str(tmp_path / "sim.zarr")]).exit_code == 0


def test_images_source_cuts_patches_of_the_users_images(ray_local, user_images, tmp_path):
    source = StructureConfig(kind=StructureKind.images, images=(str(user_images),))
    cfg = GenerateConfig(n=6, out=tmp_path / "img.zarr", structure=source, shard_size=3, batch_size=3, seed=2,
                         hr_size=16, hr_pixel_nm=20.0)
    assert generate(cfg, ClusterConfig(workers=2)).status == "complete"
    store = Store.open(tmp_path / "img.zarr")
    assert [f["name"] for f in store.spec.structure["files"]] == ["a.tif", "b.tif"]
    binned = [images.normalize_unit(images.bin_sum(images.read_stack(user_images / n).data[0], 2))[0]
              for n in ("a.tif", "b.tif")]  # (48, 48) each, what the source cuts from
    hr = np.concatenate([store.read_shard("hr", k) for k in range(2)])
    score = max_ncc_sliding(hr, binned)  # every patch is found, in one of the 8 flips/rotations, at NCC 1
    np.testing.assert_allclose(score, 1.0, atol=1e-5)
    again = GenerateConfig(**{**cfg.__dict__, "out": tmp_path / "again.zarr", "shard_size": 2})
    generate(again, ClusterConfig(workers=1))
    np.testing.assert_array_equal(np.concatenate([Store.open(tmp_path / "again.zarr").read_shard("hr", k)
                                                  for k in range(3)]), hr)  # (seed, i) only


@pytest.mark.parametrize("args, message", [
    (["--structure", "simulate", "--model", "my.safetensors"], "--model and --bf16 apply to --structure ddpm only"),
    (["--structure", "images"], "--structure images needs --images"),
    (["--structure", "images", "--images", "{img}", "--hr-pixel-nm", "15"], "not an integer multiple of its pixel size 10 nm"),
    (["--structure", "images", "--images", "{img}", "--hr-size", "64", "--hr-pixel-nm", "40"], "larger than the smallest image"),
    (["--structure", "simulate", "--hr-size", "30"], "--hr-size must be a positive multiple of 4"),
    (["--structure", "simulate", "--hr-pixel-nm", "0"], "--hr-pixel-nm must be > 0 nm"),
    (["--structure", "ddpm", "--hr-size", "60"], "--hr-size must be a positive multiple of 8"),
    (["--sampler", "ddim", "--eta", "2"], "--eta': Input should be less than or equal to 1"),
])
def test_bad_structure_requests_are_one_sentence(tmp_path, user_images, args, message):
    args = [a.replace("{img}", str(user_images)) for a in args]
    r = runner.invoke(app, ["generate", "--n", "2", "--out", str(tmp_path / "x.zarr"), *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "x.zarr").exists()
