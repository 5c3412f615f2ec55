"""The Cramér-Rao bound: the published value, an independent numerical Fisher computation, and ``factory crlb``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from typer.testing import CliRunner

from factory.cli import app
from factory.smlm import CameraModel, crlb, emitter_crlb
from factory.smlm.crlb import default_roi_px

runner = CliRunner()


def mortensen_mle_nm(n, b, sigma, a):
    """Mortensen et al. 2010 eq. 6 (MLE, Poisson, pixelated Gaussian): var = s_a^2 / N (1 + int_0^1 ln t / (1 + t / tau) dt)^-1."""
    s_a2 = sigma**2 + a**2 / 12
    tau = 2 * math.pi * s_a2 * b / (n * a**2)
    integral = scipy.integrate.quad(lambda t: math.log(t) / (1 + t / tau), 0, 1)[0]
    return math.sqrt(s_a2 / n / (1 + integral))


def test_published_value_n1000_b10_sigma130_a100():
    bound = crlb(1000.0, 10.0, 130.0, 100.0)
    assert default_roi_px(130.0, 100.0) == 13
    assert bound.x_nm[0] == pytest.approx(5.626, abs=0.001)
    assert bound.x_nm[0] == pytest.approx(mortensen_mle_nm(1000, 10, 130, 100), rel=1e-3)
    assert bound.y_nm[0] == pytest.approx(bound.x_nm[0], rel=1e-12)


@pytest.mark.parametrize("n,b,sigma,a", [(300, 2, 95, 160), (5000, 50, 110, 100), (1000, 10, 130, 100)])
def test_x_bound_follows_mortensen_closed_form(n, b, sigma, a):
    assert crlb(n, b, sigma, a, roi_px=31).x_nm[0] == pytest.approx(mortensen_mle_nm(n, b, sigma, a), rel=5e-3)


def numerical_bounds(n, b, sigma, a, k, dx, dy, qe=1.0, read=0.0, em=1.0):
    """Independent reference: expected ROI from scipy.stats.norm.cdf, Jacobian by central differences,
    Fisher = sum J J^T / (qe mu + s^2) x qe^2 / F^2, bounds = sqrt(diag(inv))."""
    centre = (k // 2 + 0.5) * a

    def image(theta):
        x, y, photons, bg = theta
        edges = np.arange(k + 1) * a
        px = np.diff(scipy.stats.norm.cdf(edges, loc=x, scale=sigma))
        py = np.diff(scipy.stats.norm.cdf(edges, loc=y, scale=sigma))
        return photons * np.outer(py, px) + bg  # (k, k) photons

    theta = np.array([centre + dx * a, centre + dy * a, n, b], dtype=np.float64)
    steps = np.array([1e-3, 1e-3, 1e-3 * n, 1e-3 * max(b, 1.0)])
    jac = np.stack([(image(theta + np.eye(4)[i] * steps[i]) - image(theta - np.eye(4)[i] * steps[i])) / (2 * steps[i])
                    for i in range(4)], axis=-1)  # (k, k, 4)
    s2 = (read / em) ** 2
    excess = 2.0 if em > 1 else 1.0
    fisher = np.einsum("rci,rc,rcj->ij", jac, qe**2 / (excess * (qe * image(theta) + s2)), jac)
    return np.sqrt(np.diag(np.linalg.inv(fisher)))


@pytest.mark.parametrize("case", [
    dict(n=1000, b=10, sigma=130, a=100, k=13, dx=0.0, dy=0.0),
    dict(n=250, b=30, sigma=95, a=160, k=7, dx=0.31, dy=-0.42),
    dict(n=2000, b=5, sigma=110, a=100, k=11, dx=-0.5, dy=0.2, qe=0.8, read=1.6),
    dict(n=800, b=20, sigma=120, a=107, k=9, dx=0.1, dy=0.1, qe=0.95, read=60.0, em=150.0),
])
def test_bound_equals_a_numerical_fisher_computation(case):
    camera = CameraModel(qe=case.get("qe", 1.0), read_noise_e=case.get("read", 0.0), em_gain=case.get("em", 1.0))
    bound = crlb(case["n"], case["b"], case["sigma"], case["a"], camera, dx_px=case["dx"], dy_px=case["dy"],
                 roi_px=case["k"])
    ours = np.array([bound.x_nm[0], bound.y_nm[0], bound.photons[0], bound.background[0]])
    reference = numerical_bounds(case["n"], case["b"], case["sigma"], case["a"], case["k"], case["dx"], case["dy"],
                                 case.get("qe", 1.0), case.get("read", 0.0), case.get("em", 1.0))
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_em_gain_halves_the_information_and_vectorizes():
    plain = crlb(1000.0, 10.0, 130.0, 100.0)
    em = crlb(1000.0, 10.0, 130.0, 100.0, CameraModel(em_gain=300.0))
    assert em.x_nm[0] == pytest.approx(math.sqrt(2) * plain.x_nm[0], rel=1e-12)
    photons = np.array([100.0, 1000.0, 10000.0])
    many = crlb(photons, 10.0, 130.0, 100.0, dx_px=[0.0, 0.2, -0.4])
    for i, (n, dx) in enumerate(zip(photons, [0.0, 0.2, -0.4])):
        assert many.x_nm[i] == pytest.approx(crlb(n, 10.0, 130.0, 100.0, dx_px=dx).x_nm[0], rel=1e-12)
    assert (np.diff(many.x_nm) < 0).all()


def test_emitter_bound_in_a_field_matches_the_roi_bound_and_grows_at_the_edge():
    a, sigma = 100.0, 130.0
    background = np.full((40, 40), 10.0)
    x = np.array([2050.0, 30.0])  # centre of pixel 20 ; near the left edge
    y = np.array([2050.0, 2050.0])
    bound = emitter_crlb(x, y, np.array([1000.0, 1000.0]), background, sigma, a, CameraModel())
    assert bound.x_nm[0] == pytest.approx(crlb(1000.0, 10.0, sigma, a).x_nm[0], rel=1e-10)
    assert bound.x_nm[1] > 1.2 * bound.x_nm[0]  # half its light falls outside the camera
    read_map = np.full((40, 40), 1.6)
    scmos = emitter_crlb(x[:1], y[:1], np.array([1000.0]), background, sigma, a,
                         CameraModel(qe=0.8, read_noise_e=read_map))
    assert scmos.x_nm[0] == pytest.approx(crlb(1000.0, 10.0, sigma, a, CameraModel(qe=0.8, read_noise_e=1.6)).x_nm[0],
                                          rel=1e-10)


def run(*args):
    return runner.invoke(app, ["crlb", *map(str, args)])


def test_cli_prints_the_bound_as_text_and_json():
    result = run("--photons", 1000, "--background", 10, "--psf-sigma-nm", 130, "--pixel-nm", 100, "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert {"crlb_x_nm", "crlb_y_nm", "crlb_photons", "crlb_background"} <= set(d)
    assert d["crlb_x_nm"] == pytest.approx(5.626, abs=0.001)
    bound = crlb(1000.0, 10.0, 130.0, 100.0)
    assert d["crlb_photons"] == pytest.approx(bound.photons[0]) and d["crlb_background"] == pytest.approx(bound.background[0])
    em = json.loads(run("--photons", 1000, "--background", 10, "--psf-sigma-nm", 130, "--pixel-nm", 100,
                        "--em-gain", 100, "--read-noise", 50, "--json").output)
    assert em["crlb_x_nm"] > 1.4 * d["crlb_x_nm"]
    text = run("--photons", 1000, "--background", 10, "--psf-sigma-nm", 130, "--pixel-nm", 100)
    assert text.exit_code == 0 and "5.626 nm" in text.output


@pytest.mark.parametrize("args,text", [
    (["--photons", 0], "--photons must be > 0 photons, got 0."),
    (["--background", -1], "--background must be >= 0 photons per pixel"),
    (["--pixel-nm", 0], "--pixel-nm must be > 0 nm"),
    (["--psf-sigma-nm", "nan"], "--psf-sigma-nm must be > 0 nm"),
    (["--em-gain", 0.5], "--em-gain must be >= 1"),
    (["--qe", 1.5], "--qe must be > 0 and <= 1"),
    (["--read-noise", -2], "--read-noise must be >= 0"),
    (["--roi-px", 8], "--roi-px must be an odd number of pixels >= 3"),
])
def test_cli_bad_values_get_one_sentence_and_exit_2(args, text):
    base = {"--photons": 1000, "--background": 10, "--psf-sigma-nm": 130, "--pixel-nm": 100}
    base.update(dict(zip(args[::2], args[1::2])))
    result = run(*[v for kv in base.items() for v in kv])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.output


def test_no_emitters_give_no_bounds_and_a_sample_without_blinks_simulates():
    """A sample whose labels never switch on (k_on = 0) has an empty emitter table, not a crash."""
    import numpy as np

    from factory.smlm import CameraModel, SmlmParams, emitter_crlb, simulate_sample

    empty = emitter_crlb(np.zeros(0), np.zeros(0), np.zeros(0), np.full((8, 8), 10.0), 130.0, 100.0, CameraModel())
    assert empty.x_nm.shape == (0,) and empty.photons.shape == (0,)
    params = SmlmParams(k_on_per_s=0.0, n_frames=5)
    hr = np.zeros((32, 32), np.float32)
    hr[10:20, 16] = 1.0
    s = simulate_sample(hr, 40.0, params, np.random.default_rng(0))
    assert s.stats["n_labels"] > 0 and s.emitters.num_rows == 0 and s.kde.shape == (5, 32, 32) and s.kde.max() == 0
