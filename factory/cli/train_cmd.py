"""``factory train``: fit the DDPM to super-resolution images."""
from __future__ import annotations

from pathlib import Path

import typer

from factory.cli.app import command, console


@command("train")
def train_command(
    data: list[Path] = typer.Option(..., "--data", help="TIFF image(s), (N, H, W) stack(s), SMLM localization tables (.csv, x/y in nm; rendered at --hr-pixel-nm) or folders of them; repeat for several."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors); <out>.state.pt holds the resumable training state."),
    preset: str = typer.Option("small", help="UNet preset: small (CPU), paper (Saguy et al., GPU) or tiny (tests)."),
    steps: int = typer.Option(20000, min=1, help="Total optimizer steps (a resumed run continues up to this)."),
    batch_size: int = typer.Option(16, min=1, help="Patches per step."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate."),
    patch_size: int = typer.Option(None, help="Training patch side in HR pixels [default: the preset's]."),
    hr_pixel_nm: float = typer.Option(None, help="HR pixel size the model works at, nm; the images are sum-binned to it by an integer factor [default: the images' own]."),
    data_pixel_nm: float = typer.Option(None, help="Pixel size of the input images in nm, when their metadata lacks it."),
    holdout_fraction: float = typer.Option(0.2, min=0.0, max=0.9, help="Right-hand strip of every image kept out of training (for validation)."),
    seed: int = typer.Option(0, help="Seed for initialization, batches and noise."),
    checkpoint_every: int = typer.Option(250, min=1, help="Steps between checkpoints."),
    max_minutes: float = typer.Option(None, help="Stop cleanly (and checkpoint) after this many minutes; rerun to resume."),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu or cuda[:N]."),
    bf16: bool = typer.Option(False, help="bf16 autocast (GPU; no gain measured on CPU)."),
    resume: bool = typer.Option(True, help="Resume from <out>.state.pt when it exists (--no-resume refuses to touch an existing run)."),
    init: str = typer.Option(None, "--init", help="Fine-tune: start a new run from this DDPM's weights ('default' or a .safetensors of the same preset), e.g. at another --hr-pixel-nm; ignored when <out>.state.pt resumes. (default: random initialization)"),
) -> None:
    """Train the diffusion model on super-resolution images (patches with overlap, 8 flips/rotations, EMA)."""
    from factory.diffusion.train import TrainConfig, train, state_path
    from factory.errors import FactoryError

    if not resume and (out.exists() or state_path(out).exists()):
        raise FactoryError(f"{out} or its training state already exists and --no-resume was given.")
    cfg = TrainConfig(data=[str(p) for p in data], out=str(out), preset=preset, steps=steps, batch_size=batch_size, lr=lr,
                      patch_size=patch_size, hr_pixel_nm=hr_pixel_nm, data_pixel_nm=data_pixel_nm,
                      holdout_fraction=holdout_fraction, seed=seed, checkpoint_every=checkpoint_every,
                      max_minutes=max_minutes, device=device, bf16=bf16, init=init)
    path = train(cfg, console=console)
    console.print(f"model written to {path}")
