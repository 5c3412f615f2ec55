"""``factory care train | apply | export-bioimageio``: CARE restoration trained on a store, applied to real images."""
from __future__ import annotations

from pathlib import Path

import typer

from factory.cli.app import app, check_output, command, console
from factory.errors import FactoryError

care_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       help="CARE restoration (Weigert et al. 2018): train on a store, restore real widefield images, export to bioimage.io.")
app.add_typer(care_app, name="care")


def care_command(name: str):
    """Register on ``factory care`` (the top-level rule: FactoryError -> one sentence, exit 2)."""
    return command(name, group=care_app)


@care_command("train")
def train_command(
    store: Path = typer.Option(..., "--store", help="A factory store (.zarr) of LR/HR pairs, streamed through factory.data."),
    out: Path = typer.Option(..., "--out", help="Model to write (.safetensors); <out>.state.pt holds the resumable state: rerun the same command to continue."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Total optimizer steps (a resumed run continues up to this)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Pairs per step."),
    lr: float = typer.Option(4e-4, "--lr", help="Adam learning rate, decayed to 0 by a cosine over --steps."),
    depth: int = typer.Option(2, "--depth", min=1, max=6, help="U-Net levels (the HR side must be divisible by 2^depth)."),
    channels: int = typer.Option(16, "--channels", min=1, help="Feature maps at the top level, doubled per level."),
    normalize: str = typer.Option("percentile", "--normalize", help="LR input normalization: percentile (per image, 1 / 99.8 % -> 0 / 1) or camera (photo-electrons from each sample's offset and gain, over a fixed scale; apply then needs the camera)."),
    val_shards: int = typer.Option(1, "--val-shards", min=0, help="Last committed shards held out and scored (PSNR in dB, FRC at 1/7 in nm)."),
    val_every: int = typer.Option(250, "--val-every", min=1, help="Steps between held-out scores."),
    checkpoint_every: int = typer.Option(250, "--checkpoint-every", min=1, help="Steps between saved states."),
    where: str = typer.Option(None, "--where", help="SQL condition on manifest columns selecting the training pairs, e.g. \"photons > 300\"."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the weights, data order and augmentation."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Do not apply random flips/rotations."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default; results depend on it)."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop cleanly after this many minutes (state saved); rerun to continue."),
) -> None:
    """Train a CARE network on a store's pairs (held-out shards scored by PSNR and FRC); resumable."""
    from factory.care.network import NetworkConfig
    from factory.care.train import CareTrainConfig, train
    from factory.care.transform import InputNorm
    from factory.query import open_store

    if normalize not in {n.value for n in InputNorm}:
        raise FactoryError(f"--normalize must be percentile or camera, got {normalize!r}.")
    opened = open_store(store)
    cfg = CareTrainConfig(store=opened.loc.url, out=str(out), steps=steps, batch_size=batch_size, lr=lr,
                          network=NetworkConfig(depth, channels), norm=InputNorm(normalize), val_shards=val_shards,
                          val_every=val_every, checkpoint_every=checkpoint_every, where=where, seed=seed,
                          augment=not no_augment, num_workers=workers, device=device, threads=threads, max_minutes=max_minutes)
    result = train(cfg, log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    m = result.metrics
    score = f"; held-out PSNR {m['psnr_db']:.2f} dB, FRC {m['frc_nm']:.0f} nm" if m.get("frc_nm") else ""
    typer.echo(f"{'trained' if result.finished else 'paused'} {result.checkpoint} at step {result.step}{score}")


@care_command("apply")
def apply_command(
    image: Path = typer.Argument(..., metavar="WIDEFIELD.tif", help="One 2-D widefield image in camera ADU."),
    model: Path = typer.Option(..., "--model", help="A CARE model from `factory care train` (.safetensors)."),
    out: Path = typer.Option(..., "--out", help="Restored image to write: float32 TIFF (normalized density) with the HR pixel size."),
    pixel_nm: float = typer.Option(None, "--pixel-nm", help="Pixel size of WIDEFIELD.tif, nm; it is resampled to the model's LR pixel. (default: from the TIFF)"),
    tile: int = typer.Option(256, "--tile", min=8, help="Tile side in HR px (a multiple of 2^depth); tiles are blended across --overlap."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="HR px shared by neighbouring tiles; >= 4 x the receptive radius (104 px at depth 2) makes tiling exact, the default 64 was within 2e-5 of the whole-field result."),
    whole: bool = typer.Option(False, "--whole", help="Restore the whole field in one pass (memory grows with the field) instead of tiles."),
    optics: Path = typer.Option(None, "--optics", help="Degradation config of this camera (e.g. from `factory calibrate`): offset_adu, gain_e_per_adu, em_gain for camera-normalized models."),
    offset_adu: float = typer.Option(None, "--offset-adu", help="Camera offset, ADU (camera-normalized models; overrides --optics)."),
    gain_e_per_adu: float = typer.Option(None, "--gain-e-per-adu", help="Camera gain, e- per ADU (camera-normalized models; overrides --optics)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Restore a widefield image: resample to the model's LR pixel, normalize exactly as in training,
    upsample to the HR grid, predict (tiled with blending, or whole), write a float32 TIFF at the HR pixel size."""
    from factory.care import checkpoint
    from factory.care.apply import ApplyConfig, apply_file

    check_output(out, overwrite)
    camera = None
    if optics is not None or offset_adu is not None or gain_e_per_adu is not None:
        known: dict = {}
        if optics is not None:
            from factory.optics import DegradationConfig

            ranges = {name: getattr(DegradationConfig.load(optics), name) for name in ("offset_adu", "gain_e_per_adu", "em_gain")}
            ranged = [name for name, r in ranges.items() if not r.fixed]
            if ranged:
                raise FactoryError(f"{optics}: {', '.join(ranged)} must be fixed values (one camera), not ranges.")
            known = {name: r.low for name, r in ranges.items()}
        camera = {"offset_adu": offset_adu if offset_adu is not None else known.get("offset_adu"),
                  "gain_e_per_adu": gain_e_per_adu if gain_e_per_adu is not None else known.get("gain_e_per_adu"),
                  "em_gain": known.get("em_gain", 1.0)}
        if camera["offset_adu"] is None or camera["gain_e_per_adu"] is None:
            raise FactoryError("give both --offset-adu and --gain-e-per-adu (or --optics).")
    loaded = checkpoint.load(model)
    cfg = ApplyConfig(tile=None if whole else tile, overlap=overlap, pixel_nm=pixel_nm, camera=camera, device=device)
    restored, hr_nm = apply_file(image, loaded, out, cfg, overwrite=overwrite)
    typer.echo(f"wrote {out}: {restored.shape[0]}x{restored.shape[1]} px at {hr_nm:g} nm (model {model.name}, "
               f"{loaded.transform.norm.value} normalization)")


@care_command("export-bioimageio")
def export_command(
    model: Path = typer.Option(..., "--model", help="A CARE model from `factory care train` (.safetensors)."),
    out: Path = typer.Option(..., "--out", help="bioimage.io model package to write (.zip)."),
    store: Path = typer.Option(None, "--store", help="Store to take the test input/output pair from. (default: the training store recorded in the model)"),
    name: str = typer.Option(None, "--name", help="Model name in the package. (default: from the file name)"),
    author: str = typer.Option("factory user", "--author", help="Author name written to the package."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Export a trained CARE model as a bioimage.io model package (TorchScript weights including the LR -> HR
    upsampling, the input normalization as bioimage.io preprocessing, a test pair), validated with bioimageio.spec."""
    from factory.care import checkpoint
    from factory.care.bioimageio import ExportConfig, export

    check_output(out, overwrite)
    loaded = checkpoint.load(model)
    summary = export(loaded, ExportConfig(out=out, store=str(store) if store else None, name=name, author=author))
    typer.echo(f"wrote {out}: bioimage.io model package, validation {summary}")
