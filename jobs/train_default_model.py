"""Train the shipped default model (``factory/models/default.safetensors``).

Rerun it to reproduce the model; it resumes from ``runs/default/model.safetensors.state.pt``
if interrupted. Data: the real STORM reconstruction in data/cos7-tubulin-storm
(CC-BY-4.0, Inês Cunha, Instituto Gulbenkian de Ciência, 2023, via nanopyx 2.1.5).

    python jobs/train_default_model.py [--steps 7163] [--max-minutes 100]   # resumable
    python jobs/train_default_model.py --export    # float16 + x0 prior -> factory/models/default.safetensors

Choices (see the model card): the image's ~20 nm pixels (an assumption; the source
does not record it) are 2x2 sum-binned to 40 nm, which keeps filaments about two
pixels wide and puts 2.56 um of cell in a 64 px patch; the small preset at 64x64
costs ~1.3 s per batch-16 step on 2 CPU cores, so ~2 hours buys several thousand
steps (the shipped model: 7163). The right 20 % of the image is held out for the x0-prior
calibration and the quality measures.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from factory.diffusion import checkpoint
from factory.diffusion.train import TrainConfig, calibrate_x0_prior, prepare_data, train

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "cos7-tubulin-storm" / "cell1_storm.tif"  # shipped in the repository
ATTRIBUTION = ("Training data: STORM reconstruction of microtubules in a COS-7 cell (beta-tubulin, AlexaFluor647), "
               "acquired and post-processed by Inês Cunha, Instituto Gulbenkian de Ciência, 2023; distributed in the "
               "nanopyx 2.1.5 wheel under CC-BY-4.0. This model is a derivative work under CC-BY-4.0.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "runs" / "default" / "model.safetensors"))
    ap.add_argument("--steps", type=int, default=7163, help="the shipped model's step count")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--export", action="store_true",
                    help="Do not train: write the EMA weights of --out as float16 to factory/models/default.safetensors.")
    args = ap.parse_args()
    cfg = TrainConfig(data=[args.data], out=args.out, preset="small", steps=args.steps, batch_size=16, lr=2e-4,
                      data_pixel_nm=20.0, hr_pixel_nm=40.0, holdout_fraction=0.2, seed=0, checkpoint_every=100,
                      max_minutes=args.max_minutes, device=args.device,
                      card={"name": "factory-default-cos7-tubulin-storm", "attribution": ATTRIBUTION,
                            "data_pixel_nm_assumed": 20.0, "license": "CC-BY-4.0"})
    if args.export:
        export(cfg)
    else:
        train(cfg)


def export(cfg: TrainConfig) -> None:
    """The EMA weights of ``cfg.out`` as float16, with the x0 prior calibrated for exactly those weights."""
    ckpt = checkpoint.load(cfg.out)
    net = ckpt.model.half().float()  # what loading the float16 file gives
    data = prepare_data(cfg, ckpt.config.unet.image_size)
    prior = calibrate_x0_prior(net, ckpt.config.schedule, data.holdout, float(data.train.mean()))
    card = {**ckpt.card, "weights_dtype": "float16", "source_checkpoint_sha256": ckpt.model_id}
    model_id = checkpoint.save(checkpoint.DEFAULT_MODEL, net, replace(ckpt.config, x0_prior=prior), card, dtype=torch.float16)
    print(f"{checkpoint.DEFAULT_MODEL} ({checkpoint.DEFAULT_MODEL.stat().st_size / 1e6:.1f} MB), model id {model_id}, "
          f"x0 prior: mean {prior.mean:.4f} below abar {prior.below_abar:.3g}")


if __name__ == "__main__":
    main()
