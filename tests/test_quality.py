"""Quality measures: NCC finds planted copies (any flip/rotation/shift) and not noise; fidelity
distances are ~0 for one distribution and grow when it changes; the model-card job runs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from factory import images
from factory.diffusion import quality




def filaments(rng: np.random.Generator, n: int, size: int, lines: int = 6, blur_px: float = 1.0) -> np.ndarray:
    """(n, size, size) random blurred line segments in [0, 1]: a stand-in for microtubule patches."""
    out = np.zeros((n, size, size), np.float32)
    for img in out:
        for _ in range(lines):
            y0, x0, ang = rng.uniform(0, size, 2).tolist() + [rng.uniform(0, np.pi)]
            s = np.linspace(-size, size, 8 * size)
            y, x = np.rint(y0 + s * np.sin(ang)).astype(int), np.rint(x0 + s * np.cos(ang)).astype(int)
            keep = (y >= 0) & (y < size) & (x >= 0) & (x < size)
            img[y[keep], x[keep]] = 1.0
        img[:] = gaussian_filter(img, blur_px)
        img /= max(img.max(), 1e-9)  # per image, as training data are normalized
    return out


def test_max_ncc_finds_planted_transformed_copy():
    rng = np.random.default_rng(0)
    reference = filaments(rng, 200, 24)
    copy = np.flip(np.rot90(reference[137], 1), axis=0) * 3.0 + 0.5  # flipped + rotated, other gain and offset
    generated = np.stack([copy, filaments(rng, 1, 24)[0], rng.normal(size=(24, 24)), np.zeros((24, 24))])
    scores = quality.max_ncc(generated, reference, chunk=37)
    assert scores[0] > 0.9999
    assert scores[2] < 0.4  # white noise vs filaments
    assert scores[1] < 0.9  # an independent filament image is not a copy
    assert scores[3] == 0.0  # a constant image correlates with nothing
    assert np.allclose(scores, quality.max_ncc(generated, reference, chunk=10_000))  # chunking changes nothing
    assert quality.max_ncc(generated[:1], reference, dihedral=False)[0] < 0.9  # without flips the copy is missed


def test_sliding_ncc_finds_copy_at_any_shift_and_matches_brute_force():
    rng = np.random.default_rng(1)
    big = filaments(rng, 1, 70, lines=20)[0]
    crop = big[23:39, 41:57]  # 16 x 16 at an offset no patch grid would hit
    generated = np.stack([np.rot90(crop, 3), filaments(rng, 1, 16)[0], rng.normal(size=(16, 16))])
    sliding = quality.max_ncc_sliding(generated, [big], chunk=5)
    assert sliding[0] > 0.9999
    # brute force: every 16 x 16 window (stride 1) through the matrix-product version
    windows = images.extract_patches(big, 16, 1)
    std_ok = windows.reshape(len(windows), -1).std(axis=1) > 1e-3
    brute = quality.max_ncc(generated, windows[std_ok])
    assert np.allclose(sliding, brute, atol=1e-5)
    stride8 = quality.max_ncc(generated, images.extract_patches(big, 16, 8))
    assert stride8[0] < 0.95  # a patch grid misses the shifted copy that the sliding version finds


def test_fidelity_distances_are_small_for_one_distribution_and_grow_with_change():
    rng = np.random.default_rng(2)
    a, b = filaments(rng, 256, 32), filaments(rng, 256, 32)
    blurred = filaments(rng, 256, 32, blur_px=2.5)
    brighter = np.clip(b * 1.6, 0, 1)
    noisy = np.clip(b + rng.normal(0, 0.1, b.shape), 0, 1)
    same_psd = quality.power_spectrum_distance(a, b)
    same_w1 = quality.histogram_distance(a, b)
    assert quality.power_spectrum_distance(a, a) == 0 and quality.histogram_distance(a, a) == 0
    assert same_psd < 0.1 and same_w1 < 0.01
    assert quality.power_spectrum_distance(a, blurred) > 5 * same_psd
    assert quality.power_spectrum_distance(a, noisy) > 5 * same_psd
    assert quality.histogram_distance(a, brighter) > 5 * same_w1
    assert quality.histogram_distance(a, noisy) > 5 * same_w1
    assert abs(quality.bright_fraction(a) - quality.bright_fraction(b)) < 0.02
    assert quality.bright_fraction(brighter) > 1.5 * quality.bright_fraction(b)


def test_histogram_distance_is_wasserstein_1():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 20000)
    assert quality.histogram_distance(x, x + 0.3) == pytest.approx(0.3, abs=1e-3)  # a shift by c costs c
    from scipy.stats import wasserstein_distance

    y = rng.exponential(1, 5000)
    assert quality.histogram_distance(x, y) == pytest.approx(wasserstein_distance(x, y), rel=0.01)


def test_radial_power_spectrum_of_white_noise_is_flat():
    p = quality.radial_power_spectrum(np.random.default_rng(4).normal(0, 2.0, (32, 32, 32)))
    assert p.shape == (16,) and np.allclose(p, 4.0, rtol=0.15)  # variance 4 at every frequency


def test_model_card_job_on_tiny_model(tiny_model, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    import model_card

    out = tmp_path / "card.md"
    text = model_card.main(["--model", str(tiny_model), "--data", str(tiny_model.parent / "train.tif"), "--n", "3",
                            "--ddim-steps", "4", "60", "--dpmpp-steps", "4", "--ddpm-steps", "8", "--out", str(out)])
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "real (train patches; NCC: held-out vs train)", "ddim 4", "ddim 60", "dpmpp 4", "ddpm 8", "ddim 25, no x0 prior"]
    assert "skipped: more steps than T=50" in rows[3]
    for r in rows[1:3] + rows[4:]:
        cells = [c.strip() for c in r.split("|")[2:-1]]
        ncc_max, ncc_mean = map(float, cells[4].split(" / "))
        assert 0 <= float(cells[1]) and 0 <= float(cells[2]) <= 1 and -1 <= ncc_mean <= ncc_max <= 1
