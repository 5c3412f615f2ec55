"""Sampling speed, side by side in one run (small preset, random weights: speed does not depend on them).

    python benchmarks/sampling.py [--batch 16] [--steps 10] [--repeats 3] [--threads N] [--no-compile]

1. images/s of our DDIM (``samplers.sample_ddim`` through ``EpsDenoiser``) vs a
   diffusers ``DDIMScheduler`` loop over the same UNet, batch and steps (target >= 1.0x);
2. UNet forward GFLOP/s (FLOPs from ``torch.utils.flop_counter.FlopCounterMode``)
   vs a plain ``torch.mm`` in the same precision (target >= 0.6);
3. what channels_last, torch.compile and bf16 autocast change for the forward on this machine;
4. params and GFLOP per forward of the small (64x64) and paper (256x256) presets;
5. batch invariance: largest |difference| of sample i drawn in a batch of 8 vs alone
   (tiny and small presets, DDIM and DPM-Solver++).
Timings interleave the variants and keep the best of ``--repeats`` (robust on a busy machine).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from factory.diffusion import checkpoint
from factory.diffusion.checkpoint import Checkpoint, ModelConfig
from factory.diffusion.samplers import EpsDenoiser, sample_ddim
from factory.diffusion.sampling import SamplerConfig, SamplerKind, sample_images
from factory.diffusion.schedule import ScheduleConfig, Spacing, alphas_cumprod, betas_for, timesteps
from factory.diffusion.unet import PRESETS, UNet, count_parameters


def random_unet(preset: str, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(PRESETS[preset])
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialized output layers too, so samples carry signal
            p.normal_(0, 0.05)
    return net.eval().requires_grad_(False)


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    """Run each callable once to warm up, then ``repeats`` interleaved rounds; min seconds per name."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def forward_flops(net: UNet, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, torch.zeros(len(x)))
    return counter.get_total_flops()


def mm_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    s = best_of({"mm": lambda: torch.mm(a, b)}, repeats)["mm"]
    return 2 * n**3 / s / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--model", nargs="*", default=[], help="checkpoint(s) for the batch-invariance check (default: random tiny + small)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} steps")

    # 4. size and cost of the presets
    for preset, side in (("small", 64), ("paper", 256)):
        net = UNet(PRESETS[preset])
        gflop = forward_flops(net, torch.zeros(1, 1, side, side)) / 1e9
        print(f"preset {preset:5s}: {count_parameters(net) / 1e6:.2f} M params, {gflop:.2f} GFLOP per forward at {side}x{side} (batch 1)")

    # 1. our DDIM vs diffusers' DDIMScheduler loop
    from diffusers import DDIMScheduler

    net = random_unet("small")
    T = 2000
    sched_cfg = ScheduleConfig(num_timesteps=T)
    abar = alphas_cumprod(sched_cfg)
    ts = timesteps(T, args.steps, Spacing.trailing)
    x_T = torch.randn(args.batch, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    sched = DDIMScheduler(num_train_timesteps=T, trained_betas=betas_for(sched_cfg).numpy(), clip_sample=True,
                          set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon")
    sched.alphas_cumprod = abar.clone()  # diffusers keeps float32 tables; share ours so outputs can be compared
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(args.steps)

    def ours():
        return sample_ddim(EpsDenoiser(net, abar, clip_x0=True), x_T, ts, abar)

    def theirs():
        x = x_T
        with torch.no_grad():
            for t in sched.timesteps:
                x = sched.step(net(x, t.expand(len(x)).float()), int(t), x, use_clipped_model_output=True).prev_sample
        return x

    diff = (ours() - theirs()).abs().max().item()
    s = best_of({"ours": ours, "diffusers": theirs}, args.repeats)
    ips = {k: args.batch / v for k, v in s.items()}
    print(f"DDIM {args.steps} steps, batch {args.batch}, 64x64: ours {ips['ours']:.2f} images/s, diffusers "
          f"{ips['diffusers']:.2f} images/s -> ratio {ips['ours'] / ips['diffusers']:.3f} (max |diff| {diff:.1e})")

    # 2. + 3. forward GFLOP/s and its variants
    x = torch.randn(args.batch, 1, 64, 64)
    t = torch.full((args.batch,), 500.0)
    flops = forward_flops(net, x)
    net_cl = random_unet("small").to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants = {"fp32": lambda: net(x, t), "fp32 channels_last": lambda: net_cl(x_cl, t)}

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x, t)

    variants["bf16 autocast"] = bf16
    if not args.no_compile:
        try:
            compiled = torch.compile(random_unet("small"))
            t0 = time.perf_counter()
            with torch.no_grad():
                compiled(x, t)
            print(f"torch.compile: first call (compilation) {time.perf_counter() - t0:.1f} s")
            variants["fp32 torch.compile"] = lambda: compiled(x, t)
        except Exception as exc:  # report, do not hide: compile needs a working C++ toolchain
            print(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    with torch.no_grad():
        s = best_of(variants, args.repeats)
    mm32, mm16 = mm_gflops(torch.float32, 1024, args.repeats), mm_gflops(torch.bfloat16, 1024, args.repeats)
    print(f"torch.mm 1024^3: fp32 {mm32:.1f} GFLOP/s, bf16 {mm16:.1f} GFLOP/s")
    for name, sec in s.items():
        rate = flops / sec / 1e9
        ref = mm16 if "bf16" in name else mm32
        print(f"forward {name:22s}: {sec * 1e3:7.1f} ms/batch, {rate:6.1f} GFLOP/s = {rate / ref:.2f} of torch.mm, "
              f"{s['fp32'] / sec:.2f}x vs fp32")

    # 5. batch invariance of per-sample noise
    if args.model:
        models = {m: checkpoint.load(m) for m in args.model}
    else:
        models = {p: Checkpoint(random_unet(p), ModelConfig(PRESETS[p], ScheduleConfig(num_timesteps=T), 40.0))
                  for p in ("tiny", "small")}
    for preset, ck in models.items():
        for kind in (SamplerKind.ddim, SamplerKind.dpmpp):
            cfg = SamplerConfig(kind, steps=10)
            batch = sample_images(ck, range(8), 0, cfg)
            alone = np.stack([sample_images(ck, [i], 0, cfg)[0] for i in range(8)])
            print(f"batch 8 vs 1, {preset}, {kind.value} 10 steps: max |diff| = {np.abs(batch - alone).max():.2e} "
                  f"(image std {batch.std():.3f})")


if __name__ == "__main__":
    main()
