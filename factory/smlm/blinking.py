"""Photophysics: each label blinks as a continuous-time Markov chain, integrated exactly per frame.

States and rates (1/s):

    off --k_on--> on --k_off--> off,        on --k_bleach--> bleached (absorbing)

the three-state model most SMLM simulators use (on/off switching with duty cycle
k_on / (k_on + k_off) as in dSTORM: van de Linde et al. 2011, Nat. Protoc. 6:991, plus
irreversible bleaching from the on state). Each chain starts at t = 0 from the on/off stationary distribution
without bleaching, P(on) = k_on / (k_on + k_off): the stack begins in the middle of a long
acquisition, not at the moment the laser is switched on. The chain is simulated event by event
(exponential dwell times, Gillespie 1977, J. Phys. Chem. 81:2340), vectorized over labels, and each frame f (the time
interval [f, f+1) in frame units) receives the exact on-time its interval overlaps:

    on_fraction[e, f] = |{t in [f, f+1): label e is on at t}|      in [0, 1], no per-frame rounding.

Expected value without bleaching: E on_fraction = k_on / (k_on + k_off) in every frame. With
bleaching the on-probability decays as the 2x2 linear system dp/dt = Q p predicts (tests).

Photons of label e in frame f = B_e x on_fraction[e, f], with per-label brightness
B_e = brightness_photons exp(s z_e - s^2 / 2), z_e ~ N(0, 1), s = ``brightness_log_sigma``
(log-normal, mean brightness_photons: dye-to-dye and orientation spread). Shot noise is added
later, per camera pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.smlm.params import SmlmParams


@dataclass(frozen=True)
class Blinks:
    """One row per (label, frame) with on-time > 0, sorted by frame then label; each (R,)."""

    emitter: np.ndarray  # (R,) int64 label index
    frame: np.ndarray  # (R,) int64 0-based frame
    on_fraction: np.ndarray  # (R,) float64 in (0, 1]
    n_bleached: int  # labels bleached before the end of the stack


def draw_brightness(n: int, params: SmlmParams, rng: np.random.Generator) -> np.ndarray:
    """(n,) float64 mean photons per full on-frame of each label (log-normal, mean brightness_photons)."""
    s = params.brightness_log_sigma
    return params.brightness_photons * np.exp(s * rng.standard_normal(n) - 0.5 * s * s)


def on_intervals(n: int, params: SmlmParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Simulate n chains over [0, n_frames) frame units -> (label, start, end) of every on-interval, n bleached.

    Draws: n uniforms for the initial states, then per event round one exponential and one
    uniform per label still running (in label order): a fixed sequence for fixed params.
    """
    frame_s = params.frame_time_ms * 1e-3
    k_on, k_off, k_bleach = params.k_on_per_s * frame_s, params.k_off_per_s * frame_s, params.k_bleach_per_s * frame_s
    horizon = float(params.n_frames)
    on = rng.random(n) < params.on_probability  # (n,) initial state
    t = np.zeros(n)  # (n,) time of the last event, frames
    active = np.arange(n)  # labels whose chain is still running (not bleached, t < horizon)
    labels, starts, ends = [], [], []
    n_bleached = 0
    while active.size:
        is_on = on[active]  # (m,)
        rate = np.where(is_on, k_off + k_bleach, k_on)  # (m,) per frame
        with np.errstate(divide="ignore"):
            dwell = rng.standard_exponential(active.size) / rate  # (m,) frames; inf where rate is 0
        u = rng.random(active.size)  # (m,) which transition leaves the on state
        start = t[active]
        end = start + dwell
        labels.append(active[is_on])
        starts.append(start[is_on])
        ends.append(np.minimum(end[is_on], horizon))
        bleached = is_on & (u * (k_off + k_bleach) < k_bleach) & (end < horizon)
        n_bleached += int(bleached.sum())
        t[active] = end
        on[active] = ~is_on
        active = active[(end < horizon) & ~bleached]
    cat = np.concatenate if labels else (lambda _: np.zeros(0))
    return cat(labels).astype(np.int64), cat(starts), cat(ends), n_bleached


def integrate_frames(label: np.ndarray, start: np.ndarray, end: np.ndarray, n_labels: int,
                     n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On-intervals (frame units) -> (label, frame, on_fraction) per touched (label, frame), exact overlaps."""
    first = np.floor(start).astype(np.int64)  # (I,) first frame touched
    last = np.minimum(np.ceil(end).astype(np.int64) - 1, n_frames - 1)  # (I,) last frame touched
    last = np.maximum(last, first)
    touched = last - first + 1  # (I,)
    which = np.repeat(np.arange(label.size), touched)  # (T,) interval of each (interval, frame) pair
    frame = first[which] + np.arange(which.size) - np.repeat(np.cumsum(touched) - touched, touched)  # (T,)
    overlap = np.minimum(end[which], frame + 1.0) - np.maximum(start[which], frame)  # (T,) frames
    key = frame * n_labels + label[which]  # (T,) sorts by frame, then label
    unique, inverse = np.unique(key, return_inverse=True)
    on_fraction = np.bincount(inverse, weights=overlap, minlength=unique.size)  # (R,) summed per (label, frame)
    keep = on_fraction > 0.0
    frame_out, label_out = np.divmod(unique[keep], n_labels)
    return label_out, frame_out, np.minimum(on_fraction[keep], 1.0)


def blink(n_labels: int, params: SmlmParams, rng: np.random.Generator) -> Blinks:
    """Simulate the chains of n_labels labels over the stack and integrate them per frame."""
    label, start, end, n_bleached = on_intervals(n_labels, params, rng)
    emitter, frame, on_fraction = integrate_frames(label, start, end, max(n_labels, 1), params.n_frames)
    return Blinks(emitter=emitter, frame=frame, on_fraction=on_fraction, n_bleached=n_bleached)
