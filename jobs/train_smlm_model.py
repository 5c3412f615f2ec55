"""Make the shipped conditional model (``factory restore --model smlm``): data, training, shipping.

    python jobs/train_smlm_model.py data                       # factory generate --mode smlm from the shipped DDPM
    OMP_NUM_THREADS=1 python jobs/train_smlm_model.py train --steps 1500 --max-minutes 75   # resumable: rerun to continue
    python jobs/train_smlm_model.py ship                       # copy into factory/models/smlm.safetensors (< 20 MB)
    python jobs/smlm_eval.py --model runs/smlm/model.safetensors   # the card's table

The data: 320 samples x 16 frames (20 shards; the last is held out) of ``jobs/smlm_train_data.toml``
from the shipped DDPM (64 px at 40 nm -> 16 px camera frames at 160 nm, KDE sigma 40 nm on the 40 nm
grid), run seed 1. Training: the ``small`` preset on whole frames (16 px -> 64 px), batch 8, AdamW
2e-4, EMA 0.999, seed 0, SR3-style continuous noise levels over 2000 levels. At the end the inference
schedule is searched on 16 held-out frames over a grid cut to what one CPU core affords (steps
10/25/50, final gamma 1e-2/0.1, ancestral and DPM-Solver++).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "runs" / "smlm"
STORE = RUN / "data.zarr"
MODEL = RUN / "model.safetensors"
SHIPPED = REPO / "factory" / "models" / "smlm.safetensors"
DATA_CMD = ["generate", "--mode", "smlm", "--n", "320", "--degradation", str(REPO / "jobs" / "smlm_train_data.toml"),
            "--out", str(STORE), "--seed", "1"]
MAX_SHIPPED_MB = 20.0


def data() -> None:
    subprocess.run([sys.executable, "-m", "factory", *DATA_CMD], check=True)


def train(steps: int, max_minutes: float | None) -> None:
    from factory.diffusion.sampler_config import SamplerKind
    from factory.diffusion.schedule_search import SearchConfig
    from factory.diffusion.smlm_data import store_source
    from factory.diffusion.train_smlm import SmlmTrainConfig, train_smlm

    search = SearchConfig(steps=(10, 25, 50), final_gammas=(1e-2, 0.1), samplers=(SamplerKind.ddpm, SamplerKind.dpmpp),
                          frames=16, batch_size=16)
    card = {"data": "factory generate " + " ".join(DATA_CMD[1:]).replace(str(REPO) + "/", ""),
            "structure_model": "default (the shipped DDPM)",
            "attribution": "derived from cell1_storm.tif (Ines Cunha, Instituto Gulbenkian de Ciencia, 2023; "
                           "CC-BY-4.0, via nanopyx 2.1.5) through the shipped DDPM"}
    cfg = SmlmTrainConfig(out=str(MODEL), preset="small", steps=steps, batch_size=8, lr=2e-4, seed=0,
                          checkpoint_every=100, max_minutes=max_minutes, device="cpu", search=search, card=card)
    train_smlm(cfg, store_source(str(STORE)), store_source(str(STORE), holdout=True))


def ship() -> None:
    from factory.diffusion import checkpoint
    from factory.diffusion.kinds import ModelKind

    ckpt = checkpoint.load(MODEL, kind=ModelKind.sr3)  # refuses a damaged or non-finite file
    if "schedule_search" not in ckpt.card:
        raise SystemExit(f"{MODEL} has no searched inference schedule yet; finish `train` first.")
    mb = MODEL.stat().st_size / 1e6
    if mb > MAX_SHIPPED_MB:
        raise SystemExit(f"{MODEL} is {mb:.1f} MB, over the {MAX_SHIPPED_MB:.0f} MB a shipped model may weigh.")
    shutil.copyfile(MODEL, SHIPPED)
    print(f"shipped {SHIPPED} ({mb:.1f} MB, {ckpt.card.get('steps')} steps)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("data", "train", "ship"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--max-minutes", type=float, default=None)
    a = ap.parse_args(argv)
    {"data": data, "train": lambda: train(a.steps, a.max_minutes), "ship": ship}[a.stage]()


if __name__ == "__main__":
    main()
