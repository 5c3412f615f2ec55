"""Training images: TIFF reading with pixel sizes, refusals, folders, patches, flips/rotations, binning."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import STORM_TIF
from factory import images
from factory.errors import FactoryError


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("shape", [(9, 11), (3, 9, 11)])
@pytest.mark.parametrize("pixel_nm", [20.0, 13.3, 107.5])
def test_write_read_roundtrip_keeps_data_and_pixel_size(tmp_path, dtype, shape, pixel_nm):
    data = (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)
    images.write_tiff(tmp_path / "a.tif", data, pixel_nm=pixel_nm)
    stack = images.read_stack(tmp_path / "a.tif")
    assert stack.data.dtype == np.float32 and stack.data.shape == (shape if len(shape) == 3 else (1, *shape))
    np.testing.assert_array_equal(stack.data.reshape(shape), data.astype(np.float32))
    assert stack.pixel_nm == pytest.approx(pixel_nm, rel=1e-6)


def test_write_without_pixel_size_reads_none(tmp_path):
    images.write_tiff(tmp_path / "a.tif", np.ones((4, 5), np.float32), pixel_nm=None)
    assert images.read_stack(tmp_path / "a.tif").pixel_nm is None


@pytest.mark.parametrize("unit, per_unit, expected_nm", [
    ("um", 50.0, 20.0), ("micron", 10.0, 100.0), ("\\u00B5m", 25.0, 40.0), ("nm", 0.05, 20.0), ("pixel", 1.0, None),
])
def test_imagej_units(tmp_path, unit, per_unit, expected_nm):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint16), imagej=True, resolution=(per_unit, per_unit), metadata={"unit": unit})
    got = images.read_stack(tmp_path / "a.tif").pixel_nm
    assert got == (None if expected_nm is None else pytest.approx(expected_nm))


@pytest.mark.parametrize("unit, per_unit, expected_nm", [
    ("CENTIMETER", 5e5, 20.0),  # 20 nm = 2e-6 cm
    ("INCH", 2.54e7 / 65.0, 65.0),
    ("INCH", 72.0, None),  # a screen DPI, not a pixel size
    ("CENTIMETER", 1.0, None),  # the writer's placeholder
    ("NONE", 5e5, None),  # no unit, no size
])
def test_plain_tiff_resolution_units(tmp_path, unit, per_unit, expected_nm):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.float32), resolution=(per_unit, per_unit), resolutionunit=unit)
    got = images.read_stack(tmp_path / "a.tif").pixel_nm
    assert got == (None if expected_nm is None else pytest.approx(expected_nm))


@pytest.mark.parametrize("data, kwargs, match", [
    (np.zeros((8, 9, 3), np.uint8), {"photometric": "rgb"}, "colour"),
    (np.zeros((2, 8, 9, 3), np.uint8), {"photometric": "rgb"}, "colour"),
    (np.zeros((8, 9, 2), np.float32), {"photometric": "minisblack", "planarconfig": "contig"}, "2 samples per pixel"),
    (np.zeros((2, 3, 8, 9), np.float32), {"photometric": "minisblack"}, "a 4-D array"),
    (np.zeros((2, 3, 8, 9), np.float32), {"imagej": True}, "a 4-D array"),
    (np.zeros((8, 9), np.complex64), {}, "not a real number type"),
])
def test_colour_multichannel_and_4d_tiffs_are_refused(tmp_path, data, kwargs, match):
    tifffile.imwrite(tmp_path / "bad.tif", data, **kwargs)
    with pytest.raises(FactoryError, match=match) as err:
        images.read_stack(tmp_path / "bad.tif")
    assert "\n" not in str(err.value)


def test_unreadable_files(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(FactoryError, match="not a readable TIFF"):
        images.read_stack(tmp_path / "junk.tif")
    with pytest.raises(FactoryError, match="no such file"):
        images.read_stack(tmp_path / "missing.tif")
    with pytest.raises(FactoryError, match="is a folder"):
        images.read_stack(tmp_path)


def test_folder_of_tiffs_in_sorted_order(tmp_path):
    for name in ["b.tif", "a.TIFF", "c.tiff", "notes.txt", "locs.csv", "10.tif"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.tif").write_bytes(b"")
    names = [p.name for p in images.find_tiffs([tmp_path])]
    assert names == ["10.tif", "a.TIFF", "b.tif", "c.tiff"]
    assert [p.name for p in images.find_tiffs([tmp_path / "sub", tmp_path / "b.tif"])] == ["d.tif", "b.tif"]
    assert [p.name for p in images.find_training_files([tmp_path])] == ["10.tif", "a.TIFF", "b.tif", "c.tiff", "locs.csv"]
    with pytest.raises(FactoryError, match="no such file or folder"):
        images.find_tiffs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FactoryError, match="no TIFF files found"):
        images.find_tiffs([tmp_path / "empty"])


@pytest.mark.parametrize("H, W, size, stride", [(10, 12, 4, 2), (10, 12, 4, 3), (16, 16, 16, 1), (9, 30, 5, 5)])
def test_extract_patches_count_and_content(H, W, size, stride):
    img = np.arange(H * W, dtype=np.float32).reshape(H, W)
    patches = images.extract_patches(img, size, stride)
    rows, cols = (H - size) // stride + 1, (W - size) // stride + 1
    assert patches.shape == (rows * cols, size, size)
    for k in range(len(patches)):
        r, c = divmod(k, cols)
        np.testing.assert_array_equal(patches[k], img[r * stride:r * stride + size, c * stride:c * stride + size])
    patches[0, 0, 0] = -1  # a copy, not a view
    assert img[0, 0] == 0


def test_extract_patches_refuses_impossible_sizes():
    with pytest.raises(FactoryError, match="larger than the image"):
        images.extract_patches(np.zeros((8, 8)), 9, 1)
    with pytest.raises(FactoryError, match="at least 1"):
        images.extract_patches(np.zeros((8, 8)), 4, 0)


def test_dihedral8_is_the_group_of_the_square():
    rng = np.random.default_rng(0)
    img = rng.random((5, 5))
    d8 = images.dihedral8(img)  # (8, 5, 5)
    assert d8.shape == (8, 5, 5)
    keys = [t.tobytes() for t in d8]
    assert len(set(keys)) == 8  # 8 distinct transforms of an asymmetric image
    np.testing.assert_array_equal(d8[0], img)  # identity first
    for a in range(8):
        for b in range(8):
            assert images.dihedral8(d8[b])[a].tobytes() in keys  # closed under composition
    stack = images.dihedral8(rng.random((2, 5, 5)))  # leading axes ride along
    assert stack.shape == (8, 2, 5, 5)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_bin_sum_conserves_the_sum(k):
    rng = np.random.default_rng(k)
    img = rng.random((2, 30, 60))  # divisible by every k
    binned = images.bin_sum(img, k)
    assert binned.shape == (2, 30 // k, 60 // k)
    assert binned.sum() == pytest.approx(img.sum())
    np.testing.assert_allclose(binned[1, 0, 0], img[1, :k, :k].sum())
    with pytest.raises(FactoryError, match="binning factor"):
        images.bin_sum(img, 0)


def test_bin_sum_crops_the_remainder():
    img = np.ones((7, 10))
    assert images.bin_sum(img, 3).sum() == 6 * 9


def test_normalize_unit_maps_the_percentile_to_one():
    img = np.linspace(0, 1000, 10001, dtype=np.float32).reshape(1, -1)
    out, scale = images.normalize_unit(img, 99.0)
    assert scale == pytest.approx(990.0) and out.max() == 1.0 and out.min() == 0.0
    assert np.count_nonzero(out == 1.0) == pytest.approx(101, abs=1)
    zeros, scale = images.normalize_unit(np.zeros((3, 3), np.float32))
    assert scale == 1.0 and not zeros.any()


def test_the_real_storm_image():
    stack = images.read_stack(STORM_TIF)
    assert stack.data.shape == (1, 1180, 1190) and stack.data.dtype == np.float32
    assert stack.pixel_nm is None  # the source does not record it
    assert stack.data.min() == 0 and stack.data.max() == 255
    patches = images.extract_patches(stack.data[0], 256, 256)
    assert patches.shape == (16, 256, 256)
    assert images.bin_sum(stack.data, 2).sum() == pytest.approx(stack.data[:, :1180, :1190].sum(), rel=1e-6)


def test_write_tiff_frames_streams_a_stack_and_leaves_nothing_on_failure(tmp_path):
    frames = (np.full((6, 7), i, np.float64) for i in range(4))
    images.write_tiff_frames(tmp_path / "s.tif", frames, (4, 6, 7), np.float64, pixel_nm=12.5)
    stack = images.read_stack(tmp_path / "s.tif")
    assert stack.data.shape == (4, 6, 7) and stack.pixel_nm == pytest.approx(12.5)
    np.testing.assert_array_equal(stack.data[:, 0, 0], [0, 1, 2, 3])

    def failing():
        yield np.zeros((6, 7), np.float32)
        raise FactoryError("the producer failed.")

    with pytest.raises(FactoryError, match="producer failed"):
        images.write_tiff_frames(tmp_path / "t.tif", failing(), (2, 6, 7), np.float32, pixel_nm=None)
    with pytest.raises(FactoryError, match="already exists"):
        images.write_tiff_frames(tmp_path / "s.tif", iter([]), (1, 6, 7), np.float32, pixel_nm=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
