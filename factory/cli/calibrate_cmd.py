"""``factory calibrate``: estimate the degradation config from a real widefield image."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.cli.app import check_output, command, console
from factory.optics.params import PhotonScale


@command("calibrate")
def calibrate_command(
    widefield: Path = typer.Argument(..., metavar="WIDEFIELD.tif", help="The real widefield image in camera ADU: one 2-D frame, or an (N, H, W) stack of repeated frames of a static field (N >= 6 measures the camera by photon transfer over time)."),
    out: Path = typer.Option(..., "--out", help="Degradation config to write (.toml, schemas/degradation.v1.json) with the table of estimates as comments; feed it to `factory generate --degradation`."),
    reference: Path = typer.Option(None, "--reference", help="Super-resolution image of the same field on a grid an integer factor finer: the PSF width and signal are fitted against it (registered by phase correlation)."),
    pixel_nm: float = typer.Option(None, "--pixel-nm", help="Camera pixel size in the sample plane, nm. (default: from the TIFF)"),
    reference_pixel_nm: float = typer.Option(None, "--reference-pixel-nm", help="Pixel size of the reference, nm. (default: from its TIFF)"),
    dark: Path = typer.Option(None, "--dark", help="Dark frame(s) (shutter closed, same exposure): offset and read noise measured directly."),
    flat: Path = typer.Option(None, "--flat", help="A stack of >= 6 evenly lit frames: more photon-transfer levels for the gain."),
    hr_pixel_nm: float = typer.Option(40.0, "--hr-pixel-nm", help="HR pixel of the generator (the model's; the shipped one: 40 nm): downsample = camera pixel / HR pixel, rounded."),
    hr_size: int = typer.Option(64, "--hr-size", help="HR side of the generated images, px: photons and background ranges are measured over tiles of hr_size / downsample LR px."),
    qe: float = typer.Option(0.8, "--qe", help="Quantum efficiency written to the config (only QE x photons can be measured from ADU)."),
    read_noise_e: float = typer.Option(1.6, "--read-noise-e", help="Read noise assumed, e- rms, only when the frames cannot separate it from the offset (one frame, flat background, no --dark)."),
    photon_scale: PhotonScale = typer.Option(PhotonScale.PEAK, "--photon-scale", help="peak: photons = signal at the brightest LR pixel of each tile; density: photons per unit of HR density per HR pixel (needs --reference)."),
    compare: list[Path] = typer.Option([], "--compare", help="A factory store whose LR contrast (p99.8/p1, photo-electrons) is printed next to the image's; repeat for several."),
    json_out: bool = typer.Option(False, "--json", help="Print the estimates, config, notes and contrast as JSON instead of the table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Estimate the optics of a real widefield image: camera offset, gain and read noise (photon transfer),
    background level, variation and correlation length, signal photons and the PSF width (from the image's
    own spots and filaments, or against a registered SR reference). Prints a table of estimates with
    their uncertainties and writes a degradation config."""
    from factory.calibrate import CalibrateConfig, calibrate, write_toml

    check_output(out, overwrite)
    cfg = CalibrateConfig(widefield=widefield, reference=reference, pixel_nm=pixel_nm, reference_pixel_nm=reference_pixel_nm,
                          dark=dark, flat=flat, hr_pixel_nm=hr_pixel_nm, hr_size=hr_size, qe=qe, read_noise_e=read_noise_e,
                          photon_scale=photon_scale)
    cal = calibrate(cfg)
    write_toml(cal, out, overwrite=overwrite)
    stores = {}
    if compare:
        from factory.calibrate.contrast import store_contrast
        from factory.query import open_store

        stores = {str(s): store_contrast(open_store(s).loc.url) for s in compare}
    if json_out:
        doc = cal.to_json()
        doc["compare"] = {k: v.__dict__ for k, v in stores.items()}
        typer.echo(json.dumps(doc))
    else:
        typer.echo(f"optics of {cal.source}")
        for line in cal.table_lines():
            typer.echo(line)
        c = cal.contrast
        typer.echo(f"LR contrast p99.8/p1 (photo-electrons), this image's tiles: median {c['median']:.1f} "
                   f"(10-90 %: {c['p10']:.1f}-{c['p90']:.1f}, {c['frames']} tiles)")
        for name, stats in stores.items():
            typer.echo(f"LR contrast p99.8/p1 (photo-electrons), {name}: {stats.line()}")
        for note in cal.notes:
            typer.echo(f"note: {note}")
    console.print(f"wrote {out}; use it with: factory generate --degradation {out}", highlight=False, soft_wrap=True)
