"""``factory train-smlm``: fit the conditional (SR3-style) model to an smlm store's (frame, KDE) pairs."""
from __future__ import annotations

from pathlib import Path

import typer

from factory.cli.app import command, console


@command("train-smlm")
def train_smlm_command(
    store: str = typer.Option(..., "--store", help="smlm store (factory generate --mode smlm): frames, KDE targets, emitters, camera columns."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors, kind factory-sr3); <out>.state.pt holds the resumable training state."),
    preset: str = typer.Option("small", help="UNet preset: small (CPU), paper (GPU) or tiny (tests); 2 input channels (noised KDE, upsampled frame)."),
    crop_lr: int = typer.Option(None, help="Square LR crop per training pair, px; crop x upscale must suit the preset [default: the largest square in a frame]."),
    steps: int = typer.Option(20000, help="Total optimizer steps (a resumed run continues up to this)."),
    batch_size: int = typer.Option(16, help="Pairs per step."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate."),
    electrons_scale: float = typer.Option(None, help="Photo-electrons per unit of the network's condition input [default: the 99.9th percentile of the first 64 training frames]."),
    seed: int = typer.Option(0, help="Seed (>= 0) for initialization, batches, crops, noise levels and noise."),
    checkpoint_every: int = typer.Option(250, help="Steps between checkpoints."),
    max_minutes: float = typer.Option(None, help="Stop cleanly (checkpoint, then choose the inference schedule) after this many minutes; rerun to resume."),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu or cuda[:N]."),
    bf16: bool = typer.Option(False, help="bf16 autocast for the network (GPU)."),
    resume: bool = typer.Option(True, help="Resume from <out>.state.pt when it exists (--no-resume refuses to touch an existing run)."),
) -> None:
    """Train the conditional diffusion model that samples an SMLM frame's emitter KDE given the frame (SR3-style,
    continuous noise level); the inference schedule is then chosen on the store's held-out frames."""
    from factory.diffusion.smlm_data import store_source
    from factory.diffusion.train_smlm import SmlmTrainConfig, train_smlm
    from factory.diffusion.training import state_path
    from factory.diffusion.unet import PRESETS
    from factory.errors import FactoryError

    if not resume and (out.exists() or state_path(out).exists()):
        raise FactoryError(f"{out} or its training state already exists and --no-resume was given.")
    cfg = SmlmTrainConfig(out=str(out), preset=preset, crop_lr=crop_lr, steps=steps, batch_size=batch_size, lr=lr,
                          seed=seed, checkpoint_every=checkpoint_every, max_minutes=max_minutes, device=device, bf16=bf16,
                          electrons_scale=electrons_scale)
    if preset not in PRESETS:
        raise FactoryError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    cfg.loop.check()  # every setting that needs no data, before the store is opened
    path = train_smlm(cfg, store_source(store), store_source(store, holdout=True), console=console)
    console.print(f"model written to {path}")
