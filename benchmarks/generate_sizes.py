"""Where generation time goes at 64 and 128 px, side by side in one run (issue: "about 1 sample/s at 128 px").

    python benchmarks/generate_sizes.py [--steps 20] [--batch 8] [--threads 2] [--repeats 2]

Per HR size, with the shipped DDPM (small preset, trained at 64 px) and DPM-Solver++:
- sampler: ``sample_images`` for one batch, per image;
- of which network: the same number of bare UNet forward passes on the same batch;
- degrade: ``degrade_sample`` with the default pairs optics, per image;
- encode: zstd (level 3, zarr's default codec) of the HR float32 and LR uint16 bytes, per image.
The rest of a store commit (manifest part, lease check) is per shard and does not scale with the
image side. images/s = 1 / (sampler + degrade + encode) per worker.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from numcodecs import Zstd

    from factory.diffusion import checkpoint
    from factory.diffusion.sampler_config import SamplerConfig, SamplerKind
    from factory.diffusion.sampling import sample_images
    from factory.optics import DegradationConfig
    from factory.optics.degrade import degrade_sample

    ckpt = checkpoint.load("default")
    cfg = SamplerConfig(kind=SamplerKind.dpmpp, steps=a.steps)
    optics = DegradationConfig.dataset_defaults()
    pixel = ckpt.config.hr_pixel_nm
    zc = Zstd(level=3)
    rows = {}
    for size in (64, 128):
        ids = list(range(a.batch))
        hr = sample_images(ckpt, ids, 0, cfg, size=size)  # warm-up, and the images to degrade
        t_sampler = best_of(a.repeats, lambda: sample_images(ckpt, ids, 0, cfg, size=size)) / a.batch
        net = ckpt.model.to(memory_format=torch.channels_last)
        x = torch.randn(a.batch, 1, size, size).to(memory_format=torch.channels_last)
        t = torch.full((a.batch,), 500, dtype=torch.long)
        with torch.inference_mode():
            t_net = best_of(a.repeats, lambda: [net(x, t) for _ in range(a.steps)]) / a.batch
        lr = []
        t_degrade = best_of(a.repeats, lambda: lr.extend(degrade_sample(h, pixel, optics, 0, i)[0]
                                                         for i, h in enumerate(hr))) / a.batch
        lr = lr[: a.batch]
        t_encode = best_of(a.repeats, lambda: [zc.encode(h.tobytes()) + zc.encode(l.tobytes())
                                               for h, l in zip(hr, lr)]) / a.batch
        total = t_sampler + t_degrade + t_encode
        rows[size] = (t_sampler, t_net, t_degrade, t_encode, 1 / total)
        print(f"{size:4d} px: sampler {1e3 * t_sampler:8.1f} ms/image (network {100 * t_net / t_sampler:5.1f} %), "
              f"degrade {1e3 * t_degrade:6.2f} ms, encode {1e3 * t_encode:6.2f} ms -> {1 / total:6.2f} images/s "
              f"({a.threads} threads, {a.steps} DPM-Solver++ steps, batch {a.batch})", flush=True)
    print(f"128 / 64 px time per image: {rows[64][4] / rows[128][4]:.2f}x (pixels: 4x)")


if __name__ == "__main__":
    main()
