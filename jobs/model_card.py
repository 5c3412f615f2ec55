"""Quality table for a checkpoint: speed, fidelity and memorization per sampler setting.

    python jobs/model_card.py                                  # the shipped model, the STORM image
    python jobs/model_card.py --model runs/default/model.safetensors --n 16 --ddpm-steps 1000

For each setting (DDIM at 10/25/50/100 steps, DPM-Solver++(2M) at 10/20, ancestral
DDPM at ``--ddpm-steps``, respaced from T, and DDIM 25 without the checkpoint's x0
prior, to show what that changes) it samples ``--n`` images (ids 0..n-1,
``--seed``) and measures, against the held-out strip of the training image(s) cut
exactly as training did (``train.prepare_data``: same binning to the model's pixel
size, same ``--holdout-fraction``, same patch size):

- s/image: wall time per image at ``--batch-size`` on this machine;
- PSD: power-spectrum distance to the held-out patches (decades, ``quality.power_spectrum_distance``);
- W1: pixel-value Wasserstein-1 distance to them ([0, 1] density units);
- bright: fraction of pixels > 0.5 (held-out real value in the header);
- NCC max/mean: memorization, max over every shift of the training region and the
  8 flips/rotations (``quality.max_ncc_sliding``), max and mean over the images.

A first row "real" scores N random training patches the same way (the floor a
perfect model reaches with this N), and its NCC column scores held-out real
patches against the training region: the real-vs-real baseline (Saguy et al.
report 0.372 between independent images, 0.345 max for their generated ones).
Prints the markdown table and writes it to ``--out`` (default: beside the checkpoint).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from factory import images  # noqa: E402
from factory.diffusion import checkpoint, quality  # noqa: E402
from factory.diffusion.sampling import SamplerConfig, SamplerKind, sample_images  # noqa: E402
from factory.diffusion.train import TrainConfig, prepare_data  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cos7-tubulin-storm" / "cell1_storm.tif"  # as jobs/train_default_model.py


def training_regions(cfg: TrainConfig, hr_pixel_nm: float) -> list[np.ndarray]:
    """The left (training) part of every image in [0, 1], binned and normalized exactly as ``prepare_data`` does."""
    regions = []
    for path in images.find_tiffs(cfg.data):
        stack = images.read_stack(path)
        k = int(round(hr_pixel_nm / (stack.pixel_nm or cfg.data_pixel_nm)))
        for img in images.bin_sum(stack.data, k):
            img, _ = images.normalize_unit(img)
            regions.append(img[:, : int(round(img.shape[1] * (1 - cfg.holdout_fraction)))])
    return regions


def settings(args, T: int) -> list[tuple[str, SamplerConfig, bool]]:
    """(row name, sampler, use the checkpoint's x0 prior) per table row."""
    clip = not args.no_clip
    out = [SamplerConfig(SamplerKind.ddim, s, clip_x0=clip) for s in args.ddim_steps]
    out += [SamplerConfig(SamplerKind.dpmpp, s, clip_x0=clip) for s in args.dpmpp_steps]
    if args.ddpm_steps > 0:
        out.append(SamplerConfig(SamplerKind.ddpm, min(args.ddpm_steps, T), clip_x0=clip))
    rows = [(f"{sc.kind.value} {sc.steps}", sc, True) for sc in out]
    return rows + [(f"ddim {s}, no x0 prior", SamplerConfig(SamplerKind.ddim, s, clip_x0=clip), False)
                   for s in args.no_prior_ddim_steps]


def row(name: str, s_per_image: str, hr: np.ndarray, real: np.ndarray, ncc: np.ndarray) -> str:
    return (f"| {name} | {s_per_image} | {quality.power_spectrum_distance(hr, real):.3f} | "
            f"{quality.histogram_distance(hr, real):.4f} | {quality.bright_fraction(hr):.3f} | "
            f"{ncc.max():.3f} / {ncc.mean():.3f} |")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="checkpoint path or 'default'")
    ap.add_argument("--data", nargs="+", default=[str(DATA)], help="training image(s), as given to training")
    ap.add_argument("--data-pixel-nm", type=float, default=20.0, help="pixel size of the data when its metadata lacks it (nm)")
    ap.add_argument("--holdout-fraction", type=float, default=0.2, help="right strip held out in training")
    ap.add_argument("--n", type=int, default=16, help="images per setting")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ddim-steps", type=int, nargs="*", default=[10, 25, 50, 100])
    ap.add_argument("--dpmpp-steps", type=int, nargs="*", default=[10, 20])
    ap.add_argument("--ddpm-steps", type=int, default=1000, help="ancestral DDPM steps (respaced from T; capped at T; 0 skips)")
    ap.add_argument("--no-prior-ddim-steps", type=int, nargs="*", default=[25],
                    help="extra DDIM rows sampled without the checkpoint's x0 prior (to show what it does)")
    ap.add_argument("--no-clip", action="store_true", help="do not clip x0 predictions to [-1, 1] (to measure what clipping does)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the network")
    ap.add_argument("--out", default=None, help="markdown file [default: <model>.quality.md]")
    args = ap.parse_args(argv)

    ckpt = checkpoint.load(args.model)
    T, patch, hr_nm = ckpt.config.schedule.num_timesteps, ckpt.config.unet.image_size, ckpt.config.hr_pixel_nm
    cfg = TrainConfig(data=args.data, out="", data_pixel_nm=args.data_pixel_nm, hr_pixel_nm=hr_nm,
                      holdout_fraction=args.holdout_fraction)
    data = prepare_data(cfg, patch)
    if not len(data.holdout):
        raise SystemExit("no held-out patches: the held-out strip is narrower than one patch")
    heldout = (data.holdout + 1) / 2  # (Q, S, S) in [0, 1]
    regions = training_regions(cfg, hr_nm)
    rng = np.random.default_rng(args.seed)
    n_real = min(args.n, len(data.train))
    real_train = (data.train[rng.choice(len(data.train), n_real, replace=False)] + 1) / 2
    real_novel = heldout[rng.choice(len(heldout), min(args.n, len(heldout)), replace=False)]

    lines = [f"Model `{ckpt.path.name}` (id {ckpt.model_id[:12]}, T={T}, {patch}x{patch} px at {hr_nm:g} nm/px), "
             f"{args.n} images per setting, seed {args.seed}, batch {args.batch_size}, x0 clipping {'off' if args.no_clip else 'on'}"
             f"{', bf16' if args.bf16 else ''}; reference: {len(heldout)} held-out "
             f"patches (bright fraction {quality.bright_fraction(heldout):.3f}); memorization against "
             f"{sum(r.size for r in regions) / 1e6:.2f} Mpx of training region, every shift, 8 flips/rotations.",
             "", "| setting | s/image | PSD dist (dec) | W1 hist | bright | NCC max / mean |", "|---|---|---|---|---|---|",
             row("real (train patches; NCC: held-out vs train)", "-", real_train, heldout,
                 quality.max_ncc_sliding(real_novel, regions))]
    print("\n".join(lines), flush=True)
    for name, sc, use_prior in settings(args, T):
        if sc.steps > T:
            lines.append(f"| {name} | skipped: more steps than T={T} | | | | |")
            print(lines[-1], flush=True)
            continue
        t0 = time.perf_counter()
        hr = np.concatenate([sample_images(ckpt, range(s, min(s + args.batch_size, args.n)), args.seed, sc,
                                           bf16=args.bf16, x0_prior=use_prior)
                             for s in range(0, args.n, args.batch_size)])  # (n, S, S) in [0, 1]
        s_per_image = (time.perf_counter() - t0) / args.n
        lines.append(row(name, f"{s_per_image:.3f}", hr, heldout,
                         quality.max_ncc_sliding(hr, regions)))
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    out = Path(args.out) if args.out else ckpt.path.with_suffix(".quality.md")
    out.write_text(text)
    print(f"written to {out}")
    return text


if __name__ == "__main__":
    main()
