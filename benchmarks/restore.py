"""Conditional restore: frames/s at K = 1 and K = 8, steps vs localization quality, memory.

    python benchmarks/restore.py                      # ~10 min on one quiet core
    python benchmarks/restore.py --train-steps 0      # speed and memory only
    python benchmarks/restore.py --model smlm --train-steps 0   # the shipped model at its searched schedule

1. Speed (weights do not matter for it): the ``small`` preset (3.3 M parameters, 2 input
   channels) on 16x16 camera frames at 100 nm -> 64x64 HR at 25 nm, 50 ancestral steps:
   frames restored per second at K = 1 and K = 8 (batch 16 rows), and the ratio. With ``--model``
   (``smlm`` or a path): that checkpoint on frames of its own geometry (16x16 camera px unless
   ``--lr-side``), with the sampler and steps its schedule search chose.
2. Quality vs steps: a ``tiny`` model trained ``--train-steps`` steps on Gaussian spots
   (1-4 emitters per 8x8 frame, 1000-5000 photons, 5 e- background), then the schedule
   search on 32 held-out frames: one row per (sampler, steps, gamma_N) with lateral RMSE,
   Jaccard, efficiency and seconds.
3. Peak resident memory of the process (``ru_maxrss``).
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from factory.diffusion import checkpoint, schedule_search
from factory.diffusion.conditional import ConditionalConfig
from factory.diffusion.kinds import ModelKind
from factory.diffusion.restore import RestoreConfig, restore
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind
from factory.diffusion.schedule import alphas_cumprod
from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry
from factory.diffusion.train_smlm import SmlmTrainConfig, train_smlm
from factory.diffusion.unet import PRESETS


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(frames: int, steps: int, model: str | None, lr_side: int) -> None:
    if model is None:
        geometry = SmlmGeometry(100.0, 25.0, 25.0, 110.0)
        cfg = ConditionalConfig(PRESETS["small"], geometry, electrons_scale=100.0,
                                sampler=SamplerConfig(kind=SamplerKind.ddpm, steps=steps))
        torch.manual_seed(0)
        net = cfg.build().eval().requires_grad_(False)
        with torch.no_grad():
            for p in net.parameters():  # random weights: realistic arithmetic, no zero shortcuts
                p.normal_(0, 0.02)
        ckpt, name = checkpoint.Checkpoint(net, cfg), "small preset (random weights)"
    else:
        ckpt = checkpoint.load(model, kind=ModelKind.sr3)
        geometry, name = ckpt.config.geometry, f"{model} ({ckpt.config.sampler.kind.value})"
        steps = ckpt.config.sampler.steps
    hr_side = lr_side * round(geometry.lr_pixel_nm / geometry.hr_pixel_nm)
    spots = GaussianSpots(frames, 0, geometry, lr_side=lr_side, emitters=(2, 8), photons=(1000.0, 5000.0), background_e=20.0)
    x = np.stack([spots[i].frame_e for i in range(frames)])
    rates = {}
    for k in (1, 8):
        n = max(1, frames // k)
        t0 = time.perf_counter()
        results = list(restore(ckpt, x[:n], RestoreConfig(samples=k, batch_size=16)))
        rates[k] = len(results) / (time.perf_counter() - t0)
    print(f"{name}, {lr_side}x{lr_side} -> {hr_side}x{hr_side} px, {steps} steps, {torch.get_num_threads()} threads: "
          f"K=1 {rates[1]:.2f} frames/s, K=8 {rates[8]:.3f} frames/s, ratio K1/K8 {rates[1] / rates[8]:.1f}")


def quality(train_steps: int) -> None:
    geometry = SmlmGeometry(100.0, 25.0, 25.0, 110.0)
    kw = dict(emitters=(1, 4), photons=(1000.0, 5000.0))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SmlmTrainConfig(out=str(Path(tmp) / "m.safetensors"), preset="tiny", steps=train_steps, batch_size=16,
                              lr=1e-3, checkpoint_every=train_steps, search=schedule_search.SearchConfig(frames=32))
        t0 = time.perf_counter()
        path = train_smlm(cfg, GaussianSpots(2000, 0, geometry, **kw), GaussianSpots(64, 1, geometry, **kw))
        ck = checkpoint.load(path, kind=ModelKind.sr3)
    gamma_n = float(alphas_cumprod(ck.config.inference)[-1])
    print(f"tiny model, {train_steps} steps + search: {time.perf_counter() - t0:.0f} s; chosen "
          f"{ck.config.sampler.kind.value} x {ck.config.sampler.steps}, gamma_N {gamma_n:.3g}")
    print("| sampler | steps | gamma_N | RMSE nm | Jaccard | efficiency | s / 32 frames |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(ck.card["schedule_search"], key=lambda r: (r["sampler"], r["steps"], r["final_gamma"])):
        print(f"| {r['sampler']} | {r['steps']} | {r['final_gamma']:g} | {r['rmse_lateral_nm']:.1f} | {r['jaccard']:.3f} | "
              f"{r['efficiency']:.3f} | {r['seconds']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None, help="a conditional checkpoint ('smlm': the shipped one); "
                    "default: the small preset with random weights")
    ap.add_argument("--lr-side", type=int, default=16, help="camera frame side, px")
    ap.add_argument("--train-steps", type=int, default=1500, help="0: skip the quality part")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as the Ray actors run; stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    speed(args.frames, args.steps, args.model, args.lr_side)
    print(f"peak RSS after speed: {peak_rss_mib():.0f} MiB")
    if args.train_steps:
        quality(args.train_steps)
        print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
