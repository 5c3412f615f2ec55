"""factory.metrics (FRC, registration) and `factory evaluate`: analytic FRC, known shifts, the real CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter
from scipy.stats import pearsonr
from typer.testing import CliRunner

from factory import images
from factory.cli import app
from factory.errors import FactoryError
from factory.evaluate import EvaluateConfig, common_grid, pearson_r, score
from factory.metrics.frc import frc_curve
from factory.metrics.register import estimate_shift, register

runner = CliRunner()


def blurred_noise_pair(n: int, sigma_b: float, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """s + n1, s + n2: s = unit white noise blurred by a Gaussian of sigma_b px (periodic), n_i white of variance 1/snr."""
    rng = np.random.default_rng(seed)
    s = gaussian_filter(rng.standard_normal((n, n)), sigma_b, mode="wrap")
    noise = 1.0 / math.sqrt(snr)
    return s + noise * rng.standard_normal((n, n)), s + noise * rng.standard_normal((n, n))


def test_frc_matches_the_analytic_curve_and_crossing():
    sigma_b, snr = 2.0, 100.0
    q_expected = math.sqrt(math.log(6 * snr)) / (2 * math.pi * sigma_b)  # S(q)/N = 1/6 <=> FRC = 1/7
    assert round(q_expected, 4) == 0.2013 and round(1 / q_expected, 3) == 4.968  # the numbers
    a, b = blurred_noise_pair(1024, sigma_b, snr, seed=0)
    curve = frc_curve(a, b)
    s = snr * np.exp(-4 * math.pi**2 * sigma_b**2 * curve.q**2)
    ring = (curve.q > 0.02) & (curve.q < 0.35)  # where the curve falls from ~1 to ~0
    deviation = (curve.smoothed() - s / (s + 1))[ring]  # E[FRC] = S / (S + N); ring noise ~0.01 after smoothing
    assert abs(deviation.mean()) < 0.003 and np.abs(deviation).max() < 0.05
    assert curve.resolution_px() == pytest.approx(1 / q_expected, rel=0.02)


def test_frc_of_independent_noise_never_resolves_and_identical_images_always_do():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 256, 256))
    curve = frc_curve(a, b)
    z = curve.frc[1:] * np.sqrt(curve.pixels[1:] / 2)  # ~N(0, 1) per ring: half the samples are independent
    assert np.abs(z).max() < 5 and np.abs(z).mean() < 1.2
    assert curve.resolution_px() > 30  # no common structure: crosses within the first rings
    assert frc_curve(a, a).resolution_px() is None  # FRC = 1 everywhere: finer than 2 px


def test_frc_pools_a_stack_of_pairs():
    pairs = [blurred_noise_pair(64, 2.0, 100.0, seed) for seed in range(16)]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    pooled = frc_curve(a, b)
    assert pooled.pixels[5] == 16 * frc_curve(a[0], b[0]).pixels[5]
    assert pooled.resolution_px() == pytest.approx(4.968, rel=0.1)


def _structure(n: int, seed: int) -> np.ndarray:
    """A sparse, blurred non-periodic structure (crop of a larger field)."""
    rng = np.random.default_rng(seed)
    big = gaussian_filter(rng.standard_normal((2 * n, 2 * n)), 3.0)
    return np.maximum(big - 0.5 * big.std(), 0.0)


@pytest.mark.parametrize("shift", [(0.6, -1.3), (-2.25, 0.4), (0.0, 0.0)])
def test_registration_recovers_a_known_subpixel_shift(shift):
    big = _structure(256, seed=2)
    moved = np.fft.ifft2(fourier_shift(np.fft.fft2(big), shift)).real  # moved(y, x) = big(y - dy, x - dx)
    rng = np.random.default_rng(3)
    ref = big[128:384, 128:384] + 0.2 * big.std() * rng.standard_normal((256, 256))
    mov = moved[128:384, 128:384] + 0.2 * big.std() * rng.standard_normal((256, 256))
    dy, dx = estimate_shift(mov, ref)
    assert abs(dy - shift[0]) < 0.05 and abs(dx - shift[1]) < 0.05
    reg = register(mov, ref)
    assert reg.reference.shape == (256 - math.ceil(abs(dy)), 256 - math.ceil(abs(dx)))  # wrapped rows/columns cut
    gain = pearson_r(reg.moving, reg.reference) - pearson_r(mov, ref)
    assert gain > 0.01 if any(shift) else abs(gain) < 1e-3


def test_removing_the_shift_restores_the_frc():
    big = _structure(256, seed=4)
    shifted = np.fft.ifft2(fourier_shift(np.fft.fft2(big), (0.6, 0.6))).real[128:384, 128:384]
    ref = big[128:384, 128:384]
    aligned = score(shifted, ref, 40.0)
    unaligned = score(shifted, ref, 40.0, EvaluateConfig(register=False))
    assert aligned.shift_px == pytest.approx((0.6, 0.6), abs=0.02)
    assert aligned.frc_px is None or aligned.frc_px < 0.7 * unaligned.frc_px  # the shift alone costs resolution
    assert aligned.pearson_r > 0.999 and unaligned.pearson_r < aligned.pearson_r


def test_pearson_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 40, 50))
    b += 0.5 * a
    assert pearson_r(a, b) == pytest.approx(pearsonr(a.ravel(), b.ravel()).statistic, rel=1e-12)


def test_common_grid_bins_an_integer_finer_reference_and_refuses_other_ratios():
    rng = np.random.default_rng(6)
    ref = rng.random((130, 128))
    a, b, pixel_nm, bin_a, bin_b = common_grid(rng.random((32, 32)), 40.0, ref, 10.0)
    assert (bin_a, bin_b, pixel_nm, b.shape) == (1, 4, 40.0, (32, 32))
    np.testing.assert_allclose(b[0, 0], ref[:4, :4].sum())
    with pytest.raises(FactoryError, match="not an integer ratio"):
        common_grid(rng.random((32, 32)), 40.0, ref, 15.0)
    with pytest.raises(FactoryError, match="same field"):
        common_grid(rng.random((40, 32)), 40.0, ref, 10.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A reference at 20 nm (512 px) and a 'restored' image at 40 nm (256 px), shifted by (0.5, -0.3) px and noisy."""
    d = tmp_path_factory.mktemp("evaluate")
    big = _structure(512, seed=7)
    ref = big[256:768, 256:768]
    moved = np.fft.ifft2(fourier_shift(np.fft.fft2(big), (1.0, -0.6))).real[256:768, 256:768]  # 20 nm px
    restored = images.bin_sum(moved, 2) + 0.05 * np.random.default_rng(8).standard_normal((256, 256))
    images.write_tiff(d / "sr.tif", ref.astype(np.float32), pixel_nm=20.0)
    images.write_tiff(d / "restored.tif", restored.astype(np.float32), pixel_nm=40.0)
    images.write_tiff(d / "nopixel.tif", restored.astype(np.float32), pixel_nm=None)
    images.write_tiff(d / "stack.tif", np.stack([restored, restored]).astype(np.float32), pixel_nm=40.0)
    return d


def test_cli_json_scores_across_pixel_sizes(pair):
    r = runner.invoke(app, ["evaluate", str(pair / "restored.tif"), "--reference", str(pair / "sr.tif"), "--json", "--tiles", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {"frc_nm", "frc_px", "pearson_r", "shift_px"} <= set(out)
    assert out["shift_px"] == pytest.approx([0.5, -0.3], abs=0.05)  # 40 nm grid: half the 20 nm shift
    assert out["reference_binned_by"] == 2 and out["pixel_nm"] == 40.0
    assert out["frc_nm"] == pytest.approx(40.0 * out["frc_px"]) and out["pearson_r"] > 0.9
    assert len(out["tiles"]) == 4 and all(t["pearson_r"] > 0.8 for t in out["tiles"])


def test_cli_text_and_pixel_size_option(pair):
    r = runner.invoke(app, ["evaluate", str(pair / "nopixel.tif"), "--reference", str(pair / "sr.tif"), "--pixel-nm", "40"])
    assert r.exit_code == 0, r.output
    assert "FRC resolution (1/7):" in r.stdout and "nm" in r.stdout and "Pearson r: 0.9" in r.stdout and "sum-binned by 2" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["missing.tif", "--reference", "sr.tif"], "no such file"),
    (["stack.tif", "--reference", "sr.tif"], "must be one 2-D image"),
    (["restored.tif", "--reference", "sr.tif", "--reference-pixel-nm", "15"], "not an integer ratio"),
    (["restored.tif", "--reference", "sr.tif", "--tiles", "20"], "fewer tiles"),
])
def test_cli_bad_input_is_one_sentence(pair, args, message):
    args = [str(pair / a) if a.endswith(".tif") else a for a in args]
    r = runner.invoke(app, ["evaluate", *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
