"""Rendering SMLM localization tables: CSV flavours, histogram and Gaussian renderers, the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.errors import FactoryError
from factory.render import (LocalizationTable, RenderConfig, RenderMode, field_of_view, load_training_image,
                            read_localizations, render)

THUNDERSTORM_HEADER = '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","offset [photon]","bkgstd [photon]","uncertainty [nm]"'


def table(x, y, sigma=None) -> LocalizationTable:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return LocalizationTable(x, y, None if sigma is None else np.broadcast_to(np.asarray(sigma, float), x.shape).copy(), None)


def write_thunderstorm(path, x, y, uncertainty, header=THUNDERSTORM_HEADER):
    rows = [f"{i + 1},{i // 10 + 1},{float(a)!r},{float(b)!r},130.0,800.5,12.0,3.1,{float(u)!r}" for i, (a, b, u) in enumerate(zip(x, y, uncertainty))]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def brute_force_gaussian(locs: LocalizationTable, x0, y0, W, H, pixel_nm):
    """The defining formula, pixel by pixel, with math.erf (no truncation)."""
    out = np.zeros((H, W))
    for x, y, s in zip(locs.x_nm, locs.y_nm, locs.sigma_nm):
        cx = [0.5 * (math.erf((x0 + (c + 1) * pixel_nm - x) / (math.sqrt(2) * s)) - math.erf((x0 + c * pixel_nm - x) / (math.sqrt(2) * s))) for c in range(W)]
        ry = [0.5 * (math.erf((y0 + (r + 1) * pixel_nm - y) / (math.sqrt(2) * s)) - math.erf((y0 + r * pixel_nm - y) / (math.sqrt(2) * s))) for r in range(H)]
        out += np.outer(ry, cx)
    return out


def test_histogram_total_is_the_number_of_localizations_in_the_field():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-500, 2500, 5000), rng.uniform(-500, 2500, 5000)
    cfg = RenderConfig(pixel_nm=20, mode=RenderMode.HISTOGRAM, origin_nm=(0, 0), size_nm=(2000, 1600))
    img = render(table(x, y), cfg)
    inside = np.count_nonzero((x >= 0) & (x < 2000) & (y >= 0) & (y < 1600))
    assert img.shape == (80, 100) and img.dtype == np.float32
    assert img.sum() == inside
    # default field: the data extent holds every localization
    assert render(table(x, y), RenderConfig(pixel_nm=20, mode=RenderMode.HISTOGRAM)).sum() == len(x)


@pytest.mark.parametrize("mode", list(RenderMode))
def test_a_single_localization_lands_in_the_right_pixel(mode):
    cfg = RenderConfig(pixel_nm=20, mode=mode, sigma_nm=4, origin_nm=(0, 0), size_nm=(200, 100))
    img = render(table([130.0], [45.0]), cfg)  # x 130 nm -> column 6, y 45 nm -> row 2
    assert img.shape == (5, 10)
    assert np.unravel_index(np.argmax(img), img.shape) == (2, 6)
    if mode == RenderMode.HISTOGRAM:
        assert img[2, 6] == 1 and img.sum() == 1


def test_gaussian_total_equals_count_away_from_borders():
    rng = np.random.default_rng(2)
    n = 3000
    locs = table(rng.uniform(300, 1700, n), rng.uniform(300, 1700, n), rng.uniform(3, 40, n))
    img = render(locs, RenderConfig(pixel_nm=20, origin_nm=(0, 0), size_nm=(2000, 2000)))
    assert img.sum() == pytest.approx(n, rel=1e-5)


def test_gaussian_matches_the_defining_formula_including_borders():
    rng = np.random.default_rng(3)
    locs = table(rng.uniform(-40, 260, 25), rng.uniform(-40, 200, 25), rng.uniform(2, 45, 25))
    img = render(locs, RenderConfig(pixel_nm=20, origin_nm=(0, 0), size_nm=(220, 160)))
    ref = brute_force_gaussian(locs, 0, 0, 11, 8, 20)
    np.testing.assert_allclose(img, ref, atol=1e-4 * ref.max())


@pytest.mark.parametrize("sigma_px", [1.0, 2.5, 4.0])
def test_gaussian_second_moment_is_the_precision(sigma_px):
    pixel_nm, n = 20.0, 500
    rng = np.random.default_rng(4)
    x = np.full(n, 1000.0) + rng.uniform(-0.5, 0.5) * pixel_nm  # one point, off the pixel grid
    img = render(table(x, np.full(n, 1013.0), sigma_px * pixel_nm), RenderConfig(pixel_nm=pixel_nm, origin_nm=(0, 0), size_nm=(2000, 2000)))
    r, c = np.indices(img.shape) + 0.5  # pixel centres, px
    total = img.sum()
    assert total == pytest.approx(n, rel=1e-5)
    cx, cy = (img * c).sum() / total, (img * r).sum() / total
    assert cx * pixel_nm == pytest.approx(x[0], abs=0.02 * pixel_nm) and cy * pixel_nm == pytest.approx(1013.0, abs=0.02 * pixel_nm)
    sd_x = math.sqrt((img * (c - cx) ** 2).sum() / total)
    sd_y = math.sqrt((img * (r - cy) ** 2).sum() / total)
    for sd in (sd_x, sd_y):
        assert sd == pytest.approx(math.sqrt(sigma_px ** 2 + 1 / 12), rel=0.01)  # + pixel integration (Sheppard)
        if sigma_px >= 2:
            assert sd == pytest.approx(sigma_px, rel=0.02)


def test_missing_precision_uses_the_fallback_sigma():
    locs = table(np.full(50, 500.0), np.full(50, 500.0))  # no sigma column
    a = render(locs, RenderConfig(pixel_nm=10, sigma_nm=30, origin_nm=(0, 0), size_nm=(1000, 1000)))
    b = render(table(locs.x_nm, locs.y_nm, 30.0), RenderConfig(pixel_nm=10, sigma_nm=5, origin_nm=(0, 0), size_nm=(1000, 1000)))
    np.testing.assert_array_equal(a, b)
    bad = table([500.0, 500.0], [500.0, 500.0], [np.nan, -1.0])  # unusable precisions fall back too
    np.testing.assert_allclose(render(bad, RenderConfig(pixel_nm=10, sigma_nm=30, origin_nm=(0, 0), size_nm=(1000, 1000))), a[:] * 2 / 50, rtol=1e-5)


def test_field_of_view_from_extent_and_options():
    locs = table([105.0, 398.0], [-41.0, 77.0])
    assert field_of_view(locs, RenderConfig(pixel_nm=20)) == (100.0, -60.0, 15, 7)
    assert field_of_view(locs, RenderConfig(pixel_nm=20, origin_nm=(0, 0))) == (0.0, 0.0, 20, 4)
    assert field_of_view(locs, RenderConfig(pixel_nm=20, size_nm=(1000, 30))) == (100.0, -60.0, 50, 2)
    with pytest.raises(FactoryError, match="origin"):
        field_of_view(locs, RenderConfig(pixel_nm=20, origin_nm=(1000, 1000)))
    with pytest.raises(FactoryError, match="pixel-nm"):
        render(table([0.0, 1e9], [0.0, 1e9]), RenderConfig(pixel_nm=1))


@pytest.mark.parametrize("header", [THUNDERSTORM_HEADER, THUNDERSTORM_HEADER.replace('"', ""),
                                    THUNDERSTORM_HEADER.replace("uncertainty [nm]", "uncertainty_xy [nm]")])
def test_thunderstorm_csv_parses(tmp_path, header):
    x, y, u = [10.5, 2000.25, 37.0], [5.0, 60.5, 1999.0], [8.5, 11.0, 20.25]
    locs = read_localizations(write_thunderstorm(tmp_path / "locs.csv", x, y, u, header))
    np.testing.assert_array_equal(locs.x_nm, x)
    np.testing.assert_array_equal(locs.y_nm, y)
    np.testing.assert_array_equal(locs.sigma_nm, u)  # the precision, not ThunderSTORM's PSF "sigma [nm]"
    np.testing.assert_array_equal(locs.frame, [1, 1, 1])


def test_plain_csv_parses(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1.5,2.5\n3,4\n")
    (tmp_path / "b.csv").write_text("frame,x,y,sigma\n7,1.5,2.5,9\n8,3,4,12\n")
    a, b = read_localizations(tmp_path / "a.csv"), read_localizations(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.x_nm, [1.5, 3]) and np.testing.assert_array_equal(a.y_nm, [2.5, 4])
    assert a.sigma_nm is None and a.frame is None and len(a) == 2
    np.testing.assert_array_equal(b.sigma_nm, [9, 12])
    np.testing.assert_array_equal(b.frame, [7, 8])


@pytest.mark.parametrize("text, match", [
    ("a,b,c\n1,2,3\n", r"no localization coordinates found \(columns: 'a', 'b', 'c'\)"),
    ('"x [px]","y [px]"\n1,2\n', "expected ThunderSTORM 'x \\[nm\\]'"),
    ("", r"columns: none"),
    ("x,y\n", "no localizations"),
    ("x,y\n1,2\nabc,4\n", "not a readable localization table"),
    ("x,y\n1,2\n3\n", "not a readable localization table"),
    ("x,y\n1,2\n,4\n", "1 of 2 rows have a missing or non-finite x or y"),
])
def test_bad_csv_is_one_sentence(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(FactoryError, match=match) as err:
        read_localizations(path)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(FactoryError, match="not a text CSV"):
        read_localizations(tmp_path / "bin.csv")
    with pytest.raises(FactoryError, match="no such file"):
        read_localizations(tmp_path / "nope.csv")


def test_load_training_image_renders_tables_and_reads_tiffs(tmp_path):
    write_thunderstorm(tmp_path / "locs.csv", [100.0, 500.0], [100.0, 300.0], [10.0, 10.0])
    stack = load_training_image(tmp_path / "locs.csv", 20.0)
    assert stack.data.shape == (1, 11, 21) and stack.pixel_nm == 20.0
    gaussian = render(read_localizations(tmp_path / "locs.csv"), RenderConfig(pixel_nm=20.0, mode=RenderMode.GAUSSIAN))
    np.testing.assert_array_equal(stack.data[0], gaussian)
    with pytest.raises(FactoryError, match="pixel size"):
        load_training_image(tmp_path / "locs.csv", None)
    images.write_tiff(tmp_path / "img.tif", np.ones((6, 7), np.float32), pixel_nm=15.0)
    tif = load_training_image(tmp_path / "img.tif", 20.0)
    assert tif.data.shape == (1, 6, 7) and tif.pixel_nm == pytest.approx(15.0)
    assert images.find_training_files([tmp_path]) == [tmp_path / "img.tif", tmp_path / "locs.csv"]
    assert images.find_tiffs([tmp_path]) == [tmp_path / "img.tif"]


# --- the CLI -----------------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize("mode", ["histogram", "gaussian"])
def test_cli_render_writes_the_image_with_its_pixel_size(tmp_path, mode):
    rng = np.random.default_rng(5)
    n = 400
    csv = write_thunderstorm(tmp_path / "locs.csv", rng.uniform(200, 800, n), rng.uniform(200, 600, n), rng.uniform(5, 15, n))
    out = tmp_path / "sr.tif"
    res = runner.invoke(app, ["render", str(csv), "--pixel-nm", "10", "--mode", mode, "--origin-nm", "0", "0",
                              "--size-nm", "1000", "800", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stack = images.read_stack(out)
    assert stack.data.shape == (1, 80, 100) and stack.pixel_nm == pytest.approx(10.0)
    assert stack.data.sum() == pytest.approx(n, rel=1e-4)
    res = runner.invoke(app, ["render", str(csv), "--out", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["render", str(csv), "--out", str(out), "--overwrite"])  # default: 20 nm, the data extent
    assert res.exit_code == 0, res.output
    _, _, W, H = field_of_view(read_localizations(csv), RenderConfig(pixel_nm=20))
    replaced = images.read_stack(out)
    assert replaced.data.shape == (1, H, W) and replaced.pixel_nm == pytest.approx(20.0)


@pytest.mark.parametrize("args, match", [
    (["missing.csv"], "no such file"),
    (["bad.csv"], "no localization coordinates found"),
    (["good.csv", "--mode", "splat"], "--mode must be one of histogram, gaussian"),
    (["good.csv", "--pixel-nm", "0"], "--pixel-nm must be positive"),
    (["good.csv", "--sigma-nm", "-2"], "--sigma-nm must be positive"),
    (["good.csv", "--size-nm", "100", "0"], "--size-nm must be two positive lengths"),
])
def test_cli_render_bad_inputs_are_one_sentence(tmp_path, args, match):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    (tmp_path / "good.csv").write_text("x,y\n1,2\n")
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    res = runner.invoke(app, ["render", *args, "--out", str(tmp_path / "out.tif")])
    assert res.exit_code == 2
    assert match in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "out.tif").exists()


def test_a_negative_uncertainty_is_refused_in_one_sentence(tmp_path):
    from typer.testing import CliRunner

    from factory.cli import app

    path = tmp_path / "locs.csv"
    path.write_text('"x [nm]","y [nm]","uncertainty [nm]"\n100,200,12\n300,400,-5\n')
    r = CliRunner().invoke(app, ["render", str(path), "--out", str(tmp_path / "sr.tif")])
    assert r.exit_code == 2 and "1 of 2 rows have a negative localization uncertainty" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "sr.tif").exists()
    r = CliRunner().invoke(app, ["train", "--data", str(path), "--out", str(tmp_path / "m.safetensors"), "--hr-pixel-nm", "20"])
    assert r.exit_code == 2 and "negative localization uncertainty" in r.output
