"""Choose the conditional model's inference schedule on held-out data, after training.

The network is conditioned on the continuous noise level, so any schedule whose
noise levels lie inside the training range (gamma >= 4.4e-5) can be used at inference,
and SR3 and WaveGrad pick theirs by a search scored on held-out data. Candidates here:
N-step linear beta schedules (``ScheduleKind.linear_exact``) from beta_1 = 1e-4 up to the
beta_N that makes the last noise level gamma_N = prod(1 - beta) equal a target
(``scipy.optimize.brentq``), for every N in ``steps`` and target in ``final_gammas``,
each run with every sampler in ``samplers`` over all N levels, from the start state
N(sqrt(gamma_N) m, (1 - gamma_N) I) around the mean target m (see
:mod:`factory.diffusion.conditional`). Defaults: N in {10, 25, 50, 100} (SR3 samples with
100), gamma_N in {1e-3, 1e-2, 0.1, 0.3} (above the training floor 4.4e-5; the larger ones
start where the network's x0 is already better than the mean), samplers ancestral DDPM
(SR3's) and DPM-Solver++(2M): 32 candidates.

Score: one posterior sample per held-out frame (its own generator, the same for every
candidate), localized (:func:`factory.localize.find_peaks`) and matched to the true
emitters (:func:`factory.localize.match`): the SMLM-challenge efficiency (Sage et al.
2019) is the criterion, then the MSE of the KDE in target units (an isolated emitter
peaks at 1), then fewer steps. Every candidate's row goes into the model card.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.optimize import brentq

from factory import localize
from factory.diffusion.conditional import ConditionalConfig
from factory.diffusion.posterior import sample_kde
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind
from factory.diffusion.schedule import ScheduleConfig, ScheduleKind, alphas_cumprod
from factory.diffusion.smlm_data import SmlmSource
from factory.errors import FactoryError
from factory.seeding import restore_generator

BETA_START = 1e-4  # beta_1 of every candidate: the last step removes 1e-4 of the variance, as in SR3 / WaveGrad


@dataclass(frozen=True)
class SearchConfig:
    steps: tuple[int, ...] = (10, 25, 50, 100)
    final_gammas: tuple[float, ...] = (1e-3, 1e-2, 0.1, 0.3)
    samplers: tuple[SamplerKind, ...] = (SamplerKind.ddpm, SamplerKind.dpmpp)
    frames: int = 32  # held-out frames scored (spread over the held-out source)
    threshold: float = 0.5  # detection threshold, fraction of an isolated emitter's peak
    tolerance_nm: float | None = None  # matching radius; None = half an LR pixel
    seed: int = 0
    batch_size: int = 32  # frames per network call


def linear_ending_at(steps: int, final_gamma: float, beta_start: float = BETA_START) -> ScheduleConfig | None:
    """The N-step linear beta schedule from ``beta_start`` whose gamma_N = ``final_gamma``; None if no beta_N < 0.999 reaches it."""
    target = math.log(final_gamma)

    def excess(beta_end: float) -> float:  # log gamma_N(beta_end) - log target: decreasing in beta_end
        return float(np.log1p(-np.linspace(beta_start, beta_end, steps)).sum()) - target

    if steps < 2 or excess(beta_start) < 0 or excess(0.999) > 0:
        return None
    return ScheduleConfig(ScheduleKind.linear_exact, steps, beta_start, float(brentq(excess, beta_start, 0.999, xtol=1e-12)))


def _candidates(search: SearchConfig, floor: float) -> list[tuple[ScheduleConfig, SamplerConfig, float]]:
    """Every reachable (schedule, sampler) pair whose last noise level stays inside the training range (>= ``floor``)."""
    out = []
    for n in search.steps:
        for gamma in search.final_gammas:
            schedule = linear_ending_at(n, gamma) if gamma >= floor else None
            if schedule is not None:
                out += [(schedule, SamplerConfig(kind=kind, steps=n), gamma) for kind in search.samplers]
    return out


def search(model: torch.nn.Module, cfg: ConditionalConfig, holdout: SmlmSource, config: SearchConfig = SearchConfig(),
           device: torch.device | str = "cpu", bf16: bool = False,
           on_row: Callable[[int, int, dict], None] | None = None) -> tuple[ScheduleConfig, SamplerConfig, list[dict]]:
    """Score every candidate on held-out frames; returns (best schedule, its sampler, one row per candidate).

    ``on_row(i, n, row)`` is called after candidate i of n (from 1) is scored: the search takes minutes."""
    if len(holdout) == 0:
        raise FactoryError("the held-out data is empty, so no inference schedule can be chosen; keep some frames out of training.")
    pick = np.unique(np.linspace(0, len(holdout) - 1, min(config.frames, len(holdout))).astype(int))
    pairs = [holdout[int(i)] for i in pick]
    if len({p.frame_e.shape for p in pairs}) != 1:
        raise FactoryError("the held-out frames differ in size; the schedule search needs frames of one size.")
    frames = torch.from_numpy(np.stack([p.frame_e for p in pairs]).astype(np.float32))  # (M, h, w) photo-electrons
    truth = np.stack([p.kde for p in pairs])  # (M, H, W) emitters per HR pixel
    geometry = cfg.geometry
    tolerance = config.tolerance_nm or geometry.lr_pixel_nm / 2
    threshold = config.threshold * localize.isolated_peak(geometry.kde_sigma_px)
    rows, best, best_key = [], None, None
    floor = float(alphas_cumprod(cfg.train_schedule)[-1])  # gamma_T of training: 4.39e-5 for SR3's range
    candidates = _candidates(config, floor)
    for i, (schedule, sampler, gamma) in enumerate(candidates, 1):
        t0 = time.perf_counter()
        kde = np.concatenate([
            sample_kde(model, cfg, frames[s:s + config.batch_size],
                       [restore_generator(config.seed, int(pick[s + r]), 0) for r in range(len(frames[s:s + config.batch_size]))],
                       sampler, schedule, device, bf16)
            for s in range(0, len(frames), config.batch_size)])  # (M, H, W)
        seconds = time.perf_counter() - t0
        matches = []
        for est, pair in zip(kde, pairs):
            xy_px, _ = localize.find_peaks(est, threshold)
            matches.append(localize.match(xy_px * geometry.hr_pixel_nm, pair.emitters_nm, tolerance))
        scores = localize.score(matches)
        mse = float(np.mean(((kde - truth) * cfg.kde_scale) ** 2))
        row = {"sampler": sampler.kind.value, "steps": schedule.num_timesteps, "final_gamma": gamma,
               "beta_end": schedule.beta_end, "mse": mse, **scores.to_dict(), "seconds": round(seconds, 3)}
        rows.append(row)
        if on_row is not None:
            on_row(i, len(candidates), row)
        efficiency = scores.efficiency if math.isfinite(scores.efficiency) else -math.inf
        key = (-efficiency, mse, schedule.num_timesteps)
        if best_key is None or key < best_key:
            best, best_key = (schedule, sampler), key
    if best is None:
        raise FactoryError("no candidate inference schedule: every (steps, final gamma) pair was out of reach.")
    return best[0], best[1], rows
