"""Make the shipped conditional model (``factory restore --model smlm``): data, training, shipping.

    python jobs/train_smlm_model.py data                       # factory generate --mode smlm from the shipped DDPM
    OMP_NUM_THREADS=1 python jobs/train_smlm_model.py train --steps 1500 --max-minutes 75   # resumable: rerun to continue
    python jobs/train_smlm_model.py ship                       # copy into factory/models/smlm.safetensors (< 20 MB)
    python jobs/smlm_eval.py --model runs/smlm/model.safetensors --store runs/smlm/data.zarr --out runs/smlm/eval
    python jobs/train_smlm_model.py card                       # factory/models/SMLM_MODEL_CARD.md from both

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
CARD = REPO / "factory" / "models" / "SMLM_MODEL_CARD.md"
EVAL = RUN / "eval" / "eval.json"
DATA_CMD = ["generate", "--mode", "smlm", "--n", "320", "--degradation", str(REPO / "jobs" / "smlm_train_data.toml"),
            "--out", str(STORE), "--seed", "1"]
MAX_SHIPPED_MB = 20.0
NOTES = "## What the table says"  # the card's hand-written section; the card stage keeps it (edit it to match)


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


def card() -> None:
    """The model card: data, attribution, training, the schedule search and the evaluation table."""
    import json

    from factory.diffusion import checkpoint
    from factory.diffusion.kinds import ModelKind

    sys.path.insert(0, str(REPO / "jobs"))
    import smlm_eval

    ckpt = checkpoint.load(SHIPPED, kind=ModelKind.sr3)
    c, cfg = ckpt.card, ckpt.config
    ev = json.loads(EVAL.read_text())
    g = cfg.geometry
    search = sorted(c["schedule_search"], key=lambda r: -r["efficiency"])
    lines = [
        "# Model card: `smlm` (conditional diffusion for dense SMLM frames)", "",
        f"`factory/models/smlm.safetensors`, kind `factory-sr3`, id `{ckpt.model_id[:12]}`, "
        f"{SHIPPED.stat().st_size / 1e6:.1f} MB. Made by `jobs/train_smlm_model.py`; this card by its `card` stage.", "",
        "## Data and attribution",
        f"- `{c['data']}` with `jobs/smlm_train_data.toml`: 320 samples x 16 frames, 16x16 px camera frames at "
        f"{g.lr_pixel_nm:g} nm, KDE targets (sigma {g.kde_sigma_nm:g} nm) on the {g.hr_pixel_nm:g} nm HR grid; "
        f"{c['train_pairs']} training frames, {c['holdout_pairs']} held out (the last shard).",
        f"- Structure: {c['structure_model']}; {c['attribution']}.", "",
        "## Training",
        f"- Preset `{c['preset']}` ({sum(p.numel() for p in ckpt.model.parameters()) / 1e6:.2f} M parameters, 2 input "
        f"channels), whole frames, batch {c['batch_size']}, AdamW lr {c['lr']}, EMA {c['ema_decay']}, seed {c['seed']}, "
        f"device {c['device']}.",
        f"- **{c['steps']} steps, {c['train_wall_s'] / 60:.0f} min of wall time** on one CPU core of the 2-core "
        f"development machine (the other core ran the CARE benchmark).",
        f"- Noise levels: {cfg.train_schedule.num_timesteps} levels, beta {cfg.train_schedule.beta_start:g} to "
        f"{cfg.train_schedule.beta_end:g} (SR3's training range), gamma drawn piecewise uniformly.",
        f"- Input: photo-electrons above offset / {c['electrons_scale']:.1f}.", "",
        "## Inference schedule (searched on held-out frames, best first)",
        "| sampler | steps | final gamma | Jaccard | RMSE nm | efficiency | s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['final_gamma']:g} | {r['jaccard']:.3f} | {r['rmse_lateral_nm']:.1f} "
              f"| {r['efficiency']:.3f} | {r['seconds']:.1f} |" for r in search]
    st = ev["settings"]
    lines += ["", f"Chosen: {cfg.sampler.kind.value}, {cfg.inference.num_timesteps} steps.", "",
              "## Evaluation (`jobs/smlm_eval.py`)",
              f"Held-out DDPM densities, {st['hr']} per condition x {st['frames']} frames, K = {st['samples']} posterior "
              f"samples, matching tolerance {st['tolerance_nm'] or g.lr_pixel_nm / 2:g} nm; conditions as in "
              "`jobs/smlm_eval.py` (fixed brightness, PSF 110 nm, 20 background photons, sCMOS-like camera). CRLB: "
              "the lateral bound of the matched emitters (RMS). MLE: `factory.smlm.detect_fit` on the same frames. "
              "Within 1 / 2 sd: the fraction of the diffusion model's per-axis errors within 1 and 2 of its predicted "
              "standard deviations (0.68 / 0.95 if calibrated). True-KDE readout: each frame's true KDE through "
              "`restore`'s own peak finder and threshold, no model: the floor of the HR grid and the readout.", "",
              smlm_eval.table(ev["rows"])]
    notes = CARD.read_text().partition(NOTES)[2] if CARD.exists() else ""  # hand-written reading of the table
    CARD.write_text("\n".join(lines) + "\n" + (f"\n{NOTES}{notes}" if notes else ""))
    print(f"wrote {CARD}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("data", "train", "ship", "card"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--max-minutes", type=float, default=None)
    a = ap.parse_args(argv)
    {"data": data, "train": lambda: train(a.steps, a.max_minutes), "ship": ship, "card": card}[a.stage]()


if __name__ == "__main__":
    main()
