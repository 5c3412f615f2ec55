"""GPU sampling speed of the paper preset, side by side in one run: images/s and achieved GFLOP/s against the
GPU's matrix-multiply peak measured in the same run, fp32 and bf16 autocast.

    python benchmarks/gpu_sampling.py [--batch 16] [--size 256] [--steps 20] [--repeats 3]

Model: the paper preset (Saguy et al. 2023: base 64, mult (1,1,2,2,2,2), attention at 16 and 8) with random
weights: speed does not depend on the weights. Sampler: DPM-Solver++(2M), ``--steps`` network evaluations,
trailing spacing, channels_last. FLOPs per forward from ``torch.utils.flop_counter``; the peak is the best of
``--repeats`` 8192^3 ``torch.mm`` in the same precision (fp32 with TF32 allowed as PyTorch does for convolutions
by default, and bf16). Prints one JSON line per measurement, then a table.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from factory.diffusion.checkpoint import Checkpoint, ModelConfig
from factory.diffusion.sampling import SamplerConfig, sample_images
from factory.diffusion.schedule import ScheduleConfig
from factory.diffusion.unet import PRESETS, UNet


def cuda_time(fn, repeats: int) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs (s), synchronized, after one warm-up."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def mm_tflops(dtype: torch.dtype, repeats: int, n: int = 8192) -> float:
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    seconds = cuda_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = PRESETS["paper"]
    torch.manual_seed(0)
    net = UNet(cfg).cuda().eval()
    ckpt = Checkpoint(net, ModelConfig(cfg, ScheduleConfig(num_timesteps=2000), hr_pixel_nm=20.0))
    x = torch.randn(args.batch, 1, args.size, args.size, device="cuda").contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, torch.full((args.batch,), 999.0, device="cuda"))
    flops_per_image = counter.get_total_flops() / args.batch * args.steps
    sampler = SamplerConfig(kind="dpmpp", steps=args.steps)
    peak = {"fp32": mm_tflops(torch.float32, args.repeats), "bf16": mm_tflops(torch.bfloat16, args.repeats)}
    rows = []
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        seconds = cuda_time(lambda: sample_images(ckpt, range(args.batch), 0, sampler, size=args.size, device="cuda",
                                                  bf16=bf16), args.repeats)
        images_s = args.batch / seconds
        tflops = images_s * flops_per_image / 1e12
        row = {"precision": precision, "batch": args.batch, "size": args.size, "steps": args.steps,
               "images_per_s": round(images_s, 2), "achieved_tflops": round(tflops, 1),
               "mm_peak_tflops": round(peak[precision], 1), "fraction_of_mm_peak": round(tflops / peak[precision], 3),
               "gflop_per_image": round(flops_per_image / 1e9, 1), "gpu": torch.cuda.get_device_name(0),
               "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        print(json.dumps(row))
        rows.append(row)
    print(f"\npaper preset {args.size}x{args.size}, DPM-Solver++ {args.steps} steps, batch {args.batch}, "
          f"{rows[0]['gflop_per_image']} GFLOP per image, {rows[0]['gpu']}")
    for r in rows:
        print(f"  {r['precision']}: {r['images_per_s']:8.2f} images/s  {r['achieved_tflops']:7.1f} TFLOP/s = "
              f"{r['fraction_of_mm_peak']:.2f} x the {r['mm_peak_tflops']} TFLOP/s matmul peak")


if __name__ == "__main__":
    main()
