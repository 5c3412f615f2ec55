"""``factory restore``: K posterior samples per SMLM frame -> mean KDE, per-pixel std, localization table."""
from __future__ import annotations

import math
from pathlib import Path

import typer

from factory.cli.app import check_output, command, console
from factory.diffusion.sampler_config import SamplerKind

COLUMNS = ("id", "frame", "x [nm]", "y [nm]", "intensity [photon]", "uncertainty [nm]")  # ThunderSTORM's names


def outputs(out: Path) -> tuple[Path, Path, Path]:
    """OUT.tif -> (OUT.tif mean, OUT_std.tif std, OUT.csv localizations)."""
    return out, out.with_name(out.stem + "_std" + out.suffix), out.with_suffix(".csv")


@command("restore")
def restore_command(
    frames: Path = typer.Argument(..., help="SMLM frames: a TIFF (F, h, w) or (h, w) stack in camera ADU."),
    model: str = typer.Option(..., "--model", help="Conditional checkpoint (.safetensors, from factory train-smlm) or 'smlm' (the shipped one, once it exists)."),
    samples: int = typer.Option(8, "--samples", help="K posterior samples per frame (K >= 2 gives the std and the uncertainties)."),
    out: Path = typer.Option(Path("restored.tif"), "--out", help="OUT.tif: (F, H, W) float32 posterior mean KDE (emitters per HR pixel, HR pixel size in the file); also OUT_std.tif (per-pixel std, same units) and OUT.csv (localizations, ThunderSTORM columns, frames from 1)."),
    offset_adu: float = typer.Option(100.0, "--offset-adu", help="Camera offset, ADU."),
    gain_e_per_adu: float = typer.Option(0.5, "--gain-e-per-adu", help="Camera gain, photo-electrons per ADU."),
    em_gain: float = typer.Option(1.0, "--em-gain", help="EM gain (1 = no EM register)."),
    qe: float = typer.Option(0.8, "--qe", help="Quantum efficiency in (0, 1]: photo-electrons per photon (for intensity [photon] only)."),
    camera: Path = typer.Option(None, "--camera", help="Camera from an optics config (.json/.toml, schemas/degradation.v1.json) with fixed offset_adu, gain_e_per_adu, em_gain, qe; replaces the four options above."),
    seed: int = typer.Option(0, "--seed", help="Seed (>= 0); sample k of frame f depends only on (seed, f, k)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Detection threshold in the mean KDE, as a fraction of an isolated emitter's peak."),
    sampler: SamplerKind = typer.Option(None, "--sampler", help="Override the model's sampler (chosen on held-out data at training). " + SamplerKind.help()),
    steps: int = typer.Option(None, "--steps", help="Override the number of steps, <= the model's inference schedule length [default: all of it]."),
    batch_size: int = typer.Option(16, "--batch-size", help="Posterior samples per network call (memory vs speed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda[:N]."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast for the network (GPU); slightly different numbers."),
) -> None:
    """Restore SMLM frames with the conditional diffusion model: for every frame, K posterior samples of the
    emitters' KDE give its mean, its per-pixel standard deviation and localizations with an uncertainty."""
    import csv
    import tempfile
    import time

    import numpy as np

    from factory import images
    from factory.cli.progress import Bar
    from factory.device import pick_device
    from factory.diffusion import checkpoint
    from factory.diffusion.kinds import ModelKind
    from factory.diffusion.restore import RestoreConfig, check_frames, restore
    from factory.diffusion.sampler_config import SamplerConfig
    from factory.errors import FactoryError
    from factory.diffusion.restore import Camera

    paths = outputs(out)
    if out.suffix.lower() not in (".tif", ".tiff") or frames.resolve() in {p.resolve() for p in paths}:
        raise FactoryError(f"--out must be a .tif path that is not the input, got {out}.")
    for path in paths:
        check_output(path, overwrite)
    mean_path, std_path, csv_path = paths
    cam = Camera.load(camera) if camera else Camera(offset_adu, gain_e_per_adu, em_gain, qe)
    cam.check()
    dev = pick_device(device)
    ckpt = checkpoint.load(model, device=dev, kind=ModelKind.sr3)
    geometry = ckpt.config.geometry
    chosen = None
    if sampler is not None or steps is not None:
        base = ckpt.config.sampler
        chosen = SamplerConfig(kind=sampler or base.kind, steps=steps or ckpt.config.inference.num_timesteps)
        chosen.validate(ckpt.config.inference.num_timesteps)
    cfg = RestoreConfig(samples=samples, seed=seed, batch_size=batch_size, threshold=threshold, sampler=chosen, bf16=bf16)
    cfg.check()
    stack = images.read_stack(frames)
    if stack.pixel_nm is not None and not math.isclose(stack.pixel_nm, geometry.lr_pixel_nm, rel_tol=0.01):
        raise FactoryError(f"{frames} has {stack.pixel_nm:g} nm pixels but the model works on {geometry.lr_pixel_nm:g} nm camera pixels.")
    frames_e = cam.electrons(stack.data)  # (F, h, w) photo-electrons above offset
    check_frames(frames_e)  # before any output or progress bar appears
    F, h, w = frames_e.shape
    H, W = h * geometry.upscale, w * geometry.upscale
    n_steps = (chosen or ckpt.config.sampler).steps
    t0, n_locs = time.perf_counter(), 0
    with Bar(f"restore K={samples}", "frames", total=F) as bar, \
            tempfile.TemporaryDirectory(dir=out.resolve().parent, prefix=".restore-") as tmp:
        std = np.lib.format.open_memmap(Path(tmp) / "std.npy", mode="w+", dtype=np.float32, shape=(F, H, W))
        table = Path(tmp) / "locs.csv"
        with open(table, "w", newline="") as fh:
            fh.write(",".join(f'"{c}"' for c in COLUMNS) + "\n")  # quoted header, plain numbers: as ThunderSTORM writes
            writer = csv.writer(fh)

            def means():
                nonlocal n_locs
                for r in restore(ckpt, frames_e, cfg, qe=cam.qe, device=dev):
                    std[r.frame] = r.std
                    for (x, y), u, p in zip(r.xy_nm, r.uncertainty_nm, r.photons):
                        n_locs += 1
                        writer.writerow([n_locs, r.frame + 1, round(float(x), 2), round(float(y), 2), round(float(p), 1),
                                         round(float(u), 2) if math.isfinite(u) else "NaN"])
                    bar.update(r.frame + 1)
                    yield r.mean

            images.write_tiff_frames(mean_path, means(), (F, H, W), np.float32, geometry.hr_pixel_nm, overwrite)
        std.flush()
        images.write_tiff(std_path, std, geometry.hr_pixel_nm, overwrite)
        table.replace(csv_path)
    elapsed = time.perf_counter() - t0
    console.print(f"{F} frames x {samples} samples x {n_steps} steps in {elapsed:.1f} s = {F / elapsed:.2f} frames/s on {dev}; "
                  f"{n_locs} localizations; written {mean_path}, {std_path}, {csv_path}")
