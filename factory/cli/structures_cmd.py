"""``factory render`` (SMLM localization table -> SR image) and ``factory simulate`` (the
mathematical microtubule model): the structures the DDPM learns from and is compared against."""
from __future__ import annotations

from pathlib import Path

import typer

from factory.cli.app import check_output, command, console
from factory.errors import FactoryError


@command("render")
def render_command(
    locs: Path = typer.Argument(..., help="Localization table: ThunderSTORM CSV (\"x [nm]\", \"y [nm]\", optional \"uncertainty [nm]\") or plain CSV (x, y in nm, optional uncertainty or sigma in nm)."),
    out: Path = typer.Option(..., "--out", help="SR image to write (float32 TIFF with the pixel size in its metadata)."),
    pixel_nm: float = typer.Option(20.0, "--pixel-nm", help="Output pixel size, nm."),
    mode: str = typer.Option("gaussian", "--mode", help="histogram: localizations per pixel; gaussian: each localization a normalized Gaussian of its precision."),
    sigma_nm: float = typer.Option(10.0, "--sigma-nm", help="Precision (Gaussian sigma) in nm where the table has none (gaussian mode)."),
    size_nm: tuple[float, float] | None = typer.Option(None, "--size-nm", help="Field width and height in nm [default: the data extent]."),
    origin_nm: tuple[float, float] | None = typer.Option(None, "--origin-nm", help="x and y of the field's top-left corner in nm [default: the data minimum]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Render an SMLM localization table into a super-resolution image (counts or normalized Gaussians per pixel)."""
    from factory import images
    from factory.render import RenderConfig, RenderMode, read_localizations, render

    modes = [m.value for m in RenderMode]
    if mode not in modes:
        raise FactoryError(f"--mode must be one of {', '.join(modes)}, got '{mode}'.")
    check_output(out, overwrite)
    cfg = RenderConfig(pixel_nm=pixel_nm, mode=RenderMode(mode), sigma_nm=sigma_nm,
                       size_nm=size_nm, origin_nm=origin_nm)
    table = read_localizations(locs)
    image = render(table, cfg)  # (H, W)
    images.write_tiff(out, image, pixel_nm=pixel_nm, overwrite=overwrite)
    console.print(f"{len(table)} localizations -> {image.shape[1]} x {image.shape[0]} pixels at {pixel_nm:g} nm "
                  f"({cfg.mode.value}), sum {float(image.sum()):.6g}, written to {out}")


@command("simulate")
def simulate_command(
    out: Path = typer.Option(..., "--out", help="Stack to write: (N, H, W) float32 TIFF in [0, 1] with the pixel size in its metadata."),
    n: int = typer.Option(16, "--n", help="Number of images."),
    size: int = typer.Option(256, "--size", help="Image side, pixels (square images)."),
    pixel_nm: float = typer.Option(20.0, "--pixel-nm", help="Pixel size, nm."),
    seed: int = typer.Option(0, "--seed", min=0, help="Run seed (>= 0); image i depends only on (seed, i)."),
    filaments: tuple[int, int] = typer.Option((4, 12), "--filaments", help="Filaments per image, min and max."),
    length_nm: tuple[float, float] = typer.Option((3000.0, 20000.0), "--length-nm", help="Filament contour length range, nm."),
    persistence_length_nm: float = typer.Option(10000.0, "--persistence-length-nm", help="Persistence length Lp of the worm-like chains, nm (microtubules in cells: 10-100 um)."),
    width_nm: float = typer.Option(25.0, "--width-nm", help="Microtubule outer diameter, nm."),
    linker_nm: float = typer.Option(15.0, "--linker-nm", help="Label (antibody) distance from the tubule surface, nm."),
    precision_nm: float = typer.Option(15.0, "--precision-nm", help="Localization precision (Gaussian sigma), nm."),
    texture: str = typer.Option("punctate", "--texture", help="punctate: blinking labels like a rendered STORM image; smooth: their expected density (an anti-aliased line)."),
    labels_per_um: float = typer.Option(80.0, "--labels-per-um", help="Mean labels per um of filament (times a per-filament brightness in 0.3-1)."),
    blinks_per_label: float = typer.Option(4.0, "--blinks-per-label", help="Mean localizations per label."),
    background_per_um2: float = typer.Option(1.5, "--background-per-um2", help="Isolated labels (background spots) per um^2."),
    background_blinks: float = typer.Option(12.0, "--background-blinks", help="Mean localizations per isolated label."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Simulate microtubule images with the mathematical model (worm-like chains, labels, blinks): the DDPM's baseline."""
    import numpy as np

    from factory import images
    from factory.simulate import SimulationConfig, Texture, simulate_frames

    textures = [t.value for t in Texture]
    if texture not in textures:
        raise FactoryError(f"--texture must be one of {', '.join(textures)}, got '{texture}'.")
    if n < 1:
        raise FactoryError(f"--n must be at least 1, got {n}.")
    if size < 1:
        raise FactoryError(f"--size must be a positive number of pixels, got {size}.")
    cfg = SimulationConfig(size_px=size, pixel_nm=pixel_nm, filaments=filaments, length_nm=length_nm,
                           persistence_length_nm=persistence_length_nm, width_nm=width_nm, linker_nm=linker_nm,
                           precision_nm=precision_nm, texture=Texture(texture), labels_per_um=labels_per_um,
                           blinks_per_label=blinks_per_label, background_per_um2=background_per_um2,
                           background_blinks=background_blinks)
    cfg.check()
    check_output(out, overwrite)
    frames = simulate_frames(cfg, n, seed)  # n x (H, W), written as they come
    images.write_tiff_frames(out, frames, (n, size, size), np.float32, pixel_nm=pixel_nm, overwrite=overwrite)
    console.print(f"{n} images of {size} x {size} pixels at {pixel_nm:g} nm written to {out}")
