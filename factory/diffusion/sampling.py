"""Turn sample ids into HR images with a trained checkpoint and a chosen sampler.

:func:`sample_images` is the one entry point (the CLI and the Ray sampler actors
call it). Sample i's initial and ancestral noise come from its own CPU generator
``seeding.diffusion_generator(run_seed, i)``, drawn row by row and then stacked and
moved to the device, so an image never depends on its batch, shard or worker
beyond floating-point batching effects: the same ids in the same batch on the same
device give the same bits; another batch size changes the network output by ~2e-6
(oneDNN blocking). Without the checkpoint's x0 prior the first x0 prediction at
t = T-1 would amplify that by 1 / sqrt(abar_{T-1}) ~ 4e4 (cosine schedule); with it
the network is not consulted there. Measured on the shipped model (batch 8 vs 1):
<= 4e-6 of [0, 1] with the prior on 1 thread (DDIM 10, DPM-Solver++ 10/20), 1-2e-4 without;
4e-5 with the prior on 2 threads.

Output: (B, size, size) float32 "normalized density" in [0, 1], the model's [-1, 1]
mapped back by (x + 1) / 2 and clipped. The pixel size is the checkpoint's
``hr_pixel_nm``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from factory.diffusion.checkpoint import Checkpoint
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind, Spacing  # noqa: F401  (re-exported for older callers)
from factory.diffusion.samplers import EpsDenoiser, per_sample_noise, run_sampler
from factory.diffusion.schedule import alphas_cumprod, timesteps
from factory.errors import FactoryError
from factory.seeding import diffusion_generator

MAX_SIDE_PX = 8192  # one (B, 1, S, S) state and the UNet's feature maps must fit in memory


def check_size(ckpt: Checkpoint, size: int | None, option: str = "--size") -> int:
    """The HR side to sample (default: the training patch side); FactoryError unless a positive multiple.

    ``option`` is the name the user typed the size as (``--size`` in sample, ``--hr-size`` in generate).
    """
    unet = ckpt.config.unet
    size = unet.image_size if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % unet.size_multiple:
        raise FactoryError(f"{option} must be a positive multiple of {unet.size_multiple} px for this model, got {size}.")
    if size > MAX_SIDE_PX:
        raise FactoryError(f"{option} {size} px is larger than the {MAX_SIDE_PX} px this sampler handles in one piece.")
    return int(size)


def sample_images(ckpt: Checkpoint, sample_ids: Sequence[int], run_seed: int, cfg: SamplerConfig,
                  size: int | None = None, device: torch.device | str | None = None, bf16: bool = False,
                  on_step: Callable[[], None] | None = None, x0_prior: bool = True) -> np.ndarray:
    """Sample one HR image per id: (B, size, size) float32 in [0, 1].

    ``device``: where the network runs (default: where ``ckpt.model`` already is;
    the model is moved there otherwise). ``bf16``: bf16 autocast for the network
    (the sampler state stays float32). The network runs channels_last.
    ``on_step`` is called after each of the ``cfg.steps`` sampler steps.
    ``x0_prior``: use the checkpoint's :class:`~factory.diffusion.checkpoint.X0Prior`
    (the data mean as x0 at near-zero SNR) when it has one; False only to measure
    what it changes.
    """
    T = ckpt.config.schedule.num_timesteps
    cfg.validate(T)
    size = check_size(ckpt, size)
    ids = [int(i) for i in sample_ids]
    if not ids:
        return np.zeros((0, size, size), np.float32)
    dev = torch.device(device) if device is not None else next(ckpt.model.parameters()).device
    net = ckpt.model.to(dev, memory_format=torch.channels_last)  # 1.2-1.4x faster forward on CPU (benchmarks/sampling.py)
    abar = alphas_cumprod(ckpt.config.schedule)  # (T,) float64
    denoiser = EpsDenoiser(net, abar, clip_x0=cfg.clip_x0, bf16=bf16, channels_last=True, on_call=on_step,
                           prior=ckpt.config.x0_prior if x0_prior else None)
    noise = per_sample_noise([diffusion_generator(run_seed, i) for i in ids], (1, size, size), dev)
    ts = timesteps(T, cfg.steps, cfg.spacing)  # (steps,) int64, starts at T-1
    with torch.inference_mode():
        x = noise()  # (B, 1, S, S) x_T, the first draw of every sample's generator
        x0 = run_sampler(cfg, denoiser, x, ts, abar, noise)
    if not bool(torch.isfinite(x0).all()):
        raise FactoryError(f"{ckpt.path or 'the model'} produced non-finite images (samples {ids[0]}..{ids[-1]}); "
                           f"this is deterministic for this model, sampler and seed, so a rerun gives the same result.")
    hr = ((x0.float().clamp(-1.0, 1.0) + 1.0) / 2.0)[:, 0]  # (B, S, S) in [0, 1]
    return hr.cpu().numpy()
