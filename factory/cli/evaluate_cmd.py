"""``factory evaluate``: score a restored image against a reference (shift, FRC at 1/7, Pearson r)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.cli.app import command, console


def _fmt(value: float | None, unit: str) -> str:
    return "not reached (finer than 2 px)" if value is None else f"{value:.1f} {unit}"


@command("evaluate")
def evaluate_command(
    restored: Path = typer.Argument(..., metavar="RESTORED.tif", help="The restored (or any) 2-D image to score, e.g. from `factory care apply`."),
    reference: Path = typer.Option(..., "--reference", help="Reference 2-D image of the same field, e.g. the super-resolution (SR) image; a finer grid by an integer factor is sum-binned to the restored one."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: frc_nm, frc_px, pearson_r, shift_px [dy, dx] (restored relative to reference, px), pixel_nm, shape, tiles."),
    tiles: int = typer.Option(1, "--tiles", min=1, help="Also score each tile of an N x N grid of the common region (tiles of at least 32 px)."),
    pixel_nm: float = typer.Option(None, "--pixel-nm", help="Pixel size of RESTORED.tif, nm. (default: from the TIFF; else the reference's when the shapes match)"),
    reference_pixel_nm: float = typer.Option(None, "--reference-pixel-nm", help="Pixel size of the reference, nm. (default: from the TIFF; else the restored image's)"),
    no_register: bool = typer.Option(False, "--no-register", help="Do not estimate or remove a shift (the grids are known to be aligned)."),
) -> None:
    """Register RESTORED.tif onto the reference (sub-pixel phase correlation; the shift is reported and
    removed), then report the Fourier ring correlation resolution at the 1/7 threshold (nm and px) and
    the Pearson correlation r of the common region."""
    from factory.evaluate import EvaluateConfig, evaluate_files

    cfg = EvaluateConfig(tiles=tiles, pixel_nm=pixel_nm, reference_pixel_nm=reference_pixel_nm, register=not no_register)
    score = evaluate_files(restored, reference, cfg)
    if json_out:
        typer.echo(json.dumps(score.to_json()))
        return
    grid = f"{score.pixel_nm:g} nm pixels" if score.pixel_nm else "pixel size unknown (pass --pixel-nm for nm)"
    binned = "".join(f", {name} sum-binned by {k}" for name, k in (("restored", score.restored_binned_by),
                                                                   ("reference", score.reference_binned_by)) if k > 1)
    typer.echo(f"FRC resolution (1/7): {_fmt(score.frc_nm, 'nm') if score.pixel_nm else _fmt(score.frc_px, 'px')}"
               + (f" = {_fmt(score.frc_px, 'px')}" if score.pixel_nm and score.frc_px is not None else ""))
    typer.echo(f"Pearson r: {score.pearson_r:.4f}")
    typer.echo(f"shift removed: dy {score.shift_px[0]:+.2f} px, dx {score.shift_px[1]:+.2f} px (restored relative to reference)")
    typer.echo(f"scored: {score.shape[0]}x{score.shape[1]} px common region, {grid}{binned}")
    for t in score.tiles:
        typer.echo(f"tile ({t.row}, {t.col}): FRC {_fmt(t.frc_nm, 'nm') if score.pixel_nm else _fmt(t.frc_px, 'px')}, r {t.pearson_r:.4f}")
    if score.frc_px is None:
        console.print("note: the FRC stays above 1/7 up to Nyquist: the agreement is finer than 2 px of this grid.")
