"""Posterior samples of the conditional model: KDE images drawn given camera-normalized LR frames.

The conditional counterpart of :mod:`factory.diffusion.sampling`: the same samplers
(one table, :func:`~factory.diffusion.samplers.run_sampler`) and the same
:class:`~factory.diffusion.samplers.EpsDenoiser`, told the noise level sqrt(gamma) instead
of a timestep, with the condition passed through as ``extra_args={"cond": ...}``. The
noise levels visited are the model's inference schedule (chosen after training by
:mod:`factory.diffusion.schedule_search`), not its training range, and the start state is
the forward marginal around the mean target (see :mod:`factory.diffusion.conditional`).

Each row (one posterior sample of one frame) draws its initial and ancestral noise from
its own CPU generator, so a sample never depends on the batch it ran in beyond
floating-point batching effects, and K samples of one frame differ.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from factory.diffusion.conditional import ConditionalConfig
from factory.diffusion.sampler_config import SamplerConfig
from factory.diffusion.samplers import EpsDenoiser, NetInput, per_sample_noise, run_sampler
from factory.diffusion.schedule import ScheduleConfig, alphas_cumprod, timesteps
from factory.errors import FactoryError


def lr_multiple(cfg: ConditionalConfig) -> int:
    """LR sides are padded to a multiple of this, so that the HR side (x k) suits the UNet."""
    m, k = cfg.size_multiple, cfg.geometry.upscale
    return m // math.gcd(m, k)


@torch.inference_mode()
def sample_kde(model: torch.nn.Module, cfg: ConditionalConfig, frames_e: torch.Tensor, generators: Sequence[torch.Generator],
               sampler: SamplerConfig | None = None, inference: ScheduleConfig | None = None,
               device: torch.device | str = "cpu", bf16: bool = False,
               on_step: Callable[[], None] | None = None) -> np.ndarray:
    """One posterior KDE sample per row: frames_e (R, h, w) photo-electrons -> (R, h k, w k) float32 KDE.

    ``generators[r]`` drives row r's noise. ``sampler`` / ``inference`` default to the
    model's (``cfg.sampler`` over ``cfg.inference``). Frames are padded at the bottom and
    right (edge values) to a size the UNet takes, and the result is cropped back.
    Output units: emitters per HR pixel (see :mod:`factory.diffusion.conditional`).
    """
    sampler = cfg.sampler if sampler is None else sampler
    inference = cfg.inference if inference is None else inference
    sampler.validate(inference.num_timesteps)
    if frames_e.dim() != 3 or len(generators) != len(frames_e):
        raise ValueError(f"need (R, h, w) frames and one generator per row, got {tuple(frames_e.shape)} and {len(generators)}")
    R, h, w = frames_e.shape
    k, m = cfg.geometry.upscale, lr_multiple(cfg)
    pad_h, pad_w = -h % m, -w % m
    x = frames_e.to(device=device, dtype=torch.float32)
    if pad_h or pad_w:
        x = F.pad(x[:, None], (0, pad_w, 0, pad_h), mode="replicate")[:, 0]  # (R, h', w')
    cond = cfg.condition(x)  # (R, 1, h' k, w' k)
    dev = cond.device
    net = model.to(dev, memory_format=torch.channels_last)
    abar = alphas_cumprod(inference)  # (N,) float64
    denoiser = EpsDenoiser(net, abar, clip_x0=sampler.clip_x0, bf16=bf16, channels_last=True, on_call=on_step,
                           net_input=NetInput.noise_level, x0_range=(-1.0, None))
    noise = per_sample_noise(generators, tuple(cond.shape[1:]), dev)
    ts = timesteps(inference.num_timesteps, sampler.steps, sampler.spacing)  # (steps,) starts at N-1
    g_start = float(abar[int(ts[0])])
    start = math.sqrt(g_start) * cfg.y0_mean + math.sqrt(1.0 - g_start) * noise()  # (R, 1, H', W') ~ q(y_N | y0 = mean)
    y0 = run_sampler(sampler, denoiser, start, ts, abar, noise, extra_args={"cond": cond})  # (R, 1, H', W')
    if not bool(torch.isfinite(y0).all()):
        raise FactoryError("the conditional model produced non-finite values; this is deterministic for this model, "
                           "input and seed, so a rerun gives the same result.")
    return cfg.from_model(y0.float())[:, 0, : h * k, : w * k].cpu().numpy()
