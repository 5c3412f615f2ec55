"""The blinking chain against its analytic moments: stationary on-fraction, bleaching decay, exact in-frame integration."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from factory.smlm import SmlmParams
from factory.smlm.blinking import blink, draw_brightness

N_LABELS = 20_000


def on_matrix(params: SmlmParams, seed: int = 0, n: int = N_LABELS):
    """(n, F) on-time fraction of every label in every frame (0 where it has no row), and the Blinks."""
    blinks = blink(n, params, np.random.default_rng(seed))
    on = np.zeros((n, params.n_frames))
    on[blinks.emitter, blinks.frame] = blinks.on_fraction
    return on, blinks


def analytic_on_fraction(params: SmlmParams) -> tuple[np.ndarray, float]:
    """Mean on-fraction per frame and the bleached fraction at the end, from dp/dt = Q p (frame units)."""
    dt = params.frame_time_ms * 1e-3
    k_on, k_off, k_b = params.k_on_per_s * dt, params.k_off_per_s * dt, params.k_bleach_per_s * dt
    q = np.array([[-(k_off + k_b), k_on], [k_off, -k_on]])  # (on, off) generator
    p0 = np.array([params.on_probability, 1 - params.on_probability])
    q_inv = np.linalg.inv(q)
    steps = [scipy.linalg.expm(q * f) for f in range(params.n_frames + 1)]
    per_frame = np.array([(q_inv @ (steps[f + 1] - steps[f]) @ p0)[0] for f in range(params.n_frames)])
    return per_frame, 1.0 - (steps[-1] @ p0).sum()


def test_without_bleaching_the_on_fraction_is_stationary_at_k_on_over_k_on_plus_k_off():
    params = SmlmParams(k_on_per_s=2.0, k_off_per_s=18.0, k_bleach_per_s=0.0, frame_time_ms=50.0, n_frames=20)
    on, blinks = on_matrix(params)
    assert blinks.n_bleached == 0
    per_label = on.mean(axis=1)  # (n,) independent across labels
    se = per_label.std() / np.sqrt(N_LABELS)
    assert abs(per_label.mean() - 0.1) < 4 * se
    frame_se = on.std(axis=0) / np.sqrt(N_LABELS)  # (F,)
    assert (np.abs(on.mean(axis=0) - 0.1) < 5 * frame_se).all()  # the first frame too: stationary start


def test_bleaching_reduces_the_on_fraction_as_the_analytic_survival_predicts():
    params = SmlmParams(k_on_per_s=1.0, k_off_per_s=10.0, k_bleach_per_s=10.0, frame_time_ms=50.0, n_frames=40)
    on, blinks = on_matrix(params, seed=1)
    expected, bleached = analytic_on_fraction(params)
    assert expected[-1] < 0.5 * expected[0]  # the test is about a real decay
    frame_se = on.std(axis=0) / np.sqrt(N_LABELS)
    assert (np.abs(on.mean(axis=0) - expected) < 5 * frame_se + 1e-12).all()
    assert abs(blinks.n_bleached / N_LABELS - bleached) < 4 * np.sqrt(bleached * (1 - bleached) / N_LABELS)


def test_on_time_is_integrated_exactly_within_each_frame():
    """Fast switching (4 switches per frame): Var(on-time in one frame) of a stationary two-state chain is
    2 pi (1 - pi) [1/l - (1 - exp(-l)) / l^2], l = k_on + k_off per frame; a per-frame on/off draw gives pi (1 - pi)."""
    params = SmlmParams(k_on_per_s=20.0, k_off_per_s=20.0, k_bleach_per_s=0.0, frame_time_ms=100.0, n_frames=4)
    on, _ = on_matrix(params, seed=2)
    lam, pi = 4.0, 0.5
    exact = 2 * pi * (1 - pi) * (1 / lam - (1 - np.exp(-lam)) / lam**2)  # 0.0943
    for f in range(params.n_frames):
        assert on[:, f].var() == pytest.approx(exact, rel=0.05)
        assert on[:, f].mean() == pytest.approx(pi, abs=4 * np.sqrt(exact / N_LABELS))
    assert ((on > 0) & (on < 1)).mean() > 0.5  # most frames are partial: not a per-frame discretization


def test_rows_are_sorted_partial_and_bounded():
    params = SmlmParams(k_on_per_s=5.0, k_off_per_s=30.0, k_bleach_per_s=1.0, frame_time_ms=20.0, n_frames=30)
    _, blinks = on_matrix(params, seed=3, n=500)
    key = blinks.frame * 500 + blinks.emitter
    assert (np.diff(key) > 0).all()  # by frame, then label, no duplicates
    assert (blinks.on_fraction > 0).all() and (blinks.on_fraction <= 1).all()
    assert blinks.frame.min() >= 0 and blinks.frame.max() < params.n_frames
    again = blink(500, params, np.random.default_rng(3))
    assert np.array_equal(again.on_fraction, blinks.on_fraction) and np.array_equal(again.frame, blinks.frame)


def test_never_switching_on_gives_no_rows():
    params = SmlmParams(k_on_per_s=0.0, k_off_per_s=10.0, n_frames=10)
    assert blink(1000, params, np.random.default_rng(0)).emitter.size == 0


def test_brightness_is_log_normal_with_the_configured_mean():
    params = SmlmParams(brightness_photons=1500.0, brightness_log_sigma=0.4)
    b = draw_brightness(50_000, params, np.random.default_rng(4))
    assert abs(b.mean() - 1500.0) < 4 * b.std() / np.sqrt(b.size)
    assert np.log(b).std() == pytest.approx(0.4, rel=0.02)
