"""``factory degrade``: turn HR images into the LR camera frames a widefield microscope would record."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.cli.app import command, console
from factory.errors import FactoryError
from factory.optics.params import PsfModel

# Options whose name differs from the config field they set (errors name the option).
_OPTION_OF_FIELD = {"psf_model": "--psf", "background_photons": "--background", "read_noise_e": "--read-noise",
                    "gain_e_per_adu": "--gain", "offset_adu": "--offset"}


def _config(path: Path | None, given: dict):
    """The run's DegradationConfig: the file (or the defaults), then every option given on the command line."""
    from factory.optics import DegradationConfig

    d = (DegradationConfig.load(path) if path else DegradationConfig()).to_dict()
    if "na" in given or "wavelength_nm" in given:
        d["psf_sigma_nm"] = None  # the options choose the NA form of the PSF width
    if "psf_sigma_nm" in given:
        d["na"] = d["wavelength_nm"] = None
    d.update({k: v.value if isinstance(v, PsfModel) else v for k, v in given.items()})
    try:
        return DegradationConfig.from_dict(d)
    except FactoryError as exc:
        message = str(exc)
        for field, option in _OPTION_OF_FIELD.items():
            if field in given and message.startswith(field):
                message = f"{option} ({field}){message[len(field):]}"
        raise FactoryError(message) from None


@command("degrade")
def degrade_command(
    image: Path = typer.Argument(..., metavar="IN.tif", help="HR image: a 2-D TIFF or an (N, H, W) stack. Each image is normalized by its own max to [0, 1] (negative values set to 0); only its shape matters, --photons sets the brightness."),
    out: Path = typer.Option(..., "--out", help="LR TIFF to write (2-D in -> 2-D out, stack in -> stack out) with the LR pixel size in its metadata; the parameters used go to <out stem>.degradation.json beside it."),
    hr_pixel_nm: float = typer.Option(None, "--hr-pixel-nm", help="HR pixel size, nm. (default: from the TIFF metadata; required when it has none)"),
    downsample: int = typer.Option(None, "--downsample", help="Integer binning factor k: LR side = HR side / k (must divide it), LR pixel = k x HR pixel. (default: 4)"),
    psf_sigma_nm: float = typer.Option(None, "--psf-sigma-nm", help="Gaussian PSF sigma in the sample plane, nm. (default: 95 nm, unless --na and --wavelength-nm are given)"),
    na: float = typer.Option(None, "--na", help="Numerical aperture; with --wavelength-nm sets sigma = 0.21 wavelength / NA instead of --psf-sigma-nm."),
    wavelength_nm: float = typer.Option(None, "--wavelength-nm", help="Emission wavelength, nm (with --na)."),
    psf: PsfModel = typer.Option(None, "--psf", help="PSF on the HR grid: gaussian (sampled at pixel centres) or erf (integrated over each HR pixel). (default: gaussian)"),
    photons: float = typer.Option(None, "--photons", help="Expected SIGNAL photons at the brightest LR pixel, after PSF and binning, before background, QE and noise. (default: 1000)"),
    background: float = typer.Option(None, "--background", help="Mean background photons per LR pixel; 0 = none. (default: 10)"),
    background_variation: float = typer.Option(None, "--background-variation", help="Smooth background structure: log-amplitude v, relative std ~ v; 0 = flat. (default: 0.3)"),
    background_sigma_nm: float = typer.Option(None, "--background-sigma-nm", help="Correlation length of the background structure, nm. (default: 2000)"),
    read_noise: float = typer.Option(None, "--read-noise", help="Gaussian read noise, e- rms. (default: 1.6)"),
    gain: float = typer.Option(None, "--gain", help="Conversion gain, e- per ADU. (default: 0.5)"),
    offset: float = typer.Option(None, "--offset", help="Camera offset (bias), ADU. (default: 100)"),
    qe: float = typer.Option(None, "--qe", help="Quantum efficiency, fraction of photons detected, in (0, 1]. (default: 0.8)"),
    em_gain: float = typer.Option(None, "--em-gain", help="EM register gain (gamma-distributed multiplication, excess noise factor sqrt 2); 1 = no EM register. (default: 1)"),
    bit_depth: int = typer.Option(None, "--bit-depth", help="ADC bits, 1-16: values are rounded and clipped to 0..2^bits - 1 ADU, stored as uint16. (default: 16)"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed: image i draws its parameters and noise from factory.seeding.degradation_rng(seed, i)."),
    no_noise: bool = typer.Option(False, "--no-noise", help="Write the noise-free expectation instead: float32 expected photons per LR pixel (signal + background), before QE and camera."),
    config: Path = typer.Option(None, "--config", help="Degradation config (.json or .toml, schemas/degradation.v1.json) whose parameters may be [low, high] ranges, drawn per image; options given on the command line override it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and its .degradation.json) if they exist."),
) -> None:
    """Degrade HR images into LR widefield camera frames: PSF blur, binning, background, Poisson shot
    noise, camera (QE, EM gain, read noise, gain, offset, bit depth). Output: uint16 ADU."""
    import numpy as np

    from factory import images
    from factory.cli.app import check_output
    from factory.optics import degrade_sample

    options = {"downsample": downsample, "psf_sigma_nm": psf_sigma_nm, "na": na, "wavelength_nm": wavelength_nm,
               "psf_model": psf, "photons": photons, "background_photons": background,
               "background_variation": background_variation, "background_sigma_nm": background_sigma_nm,
               "read_noise_e": read_noise, "gain_e_per_adu": gain, "offset_adu": offset, "qe": qe, "em_gain": em_gain,
               "bit_depth": bit_depth}
    cfg = _config(config, {k: v for k, v in options.items() if v is not None})
    stack = images.read_stack(image)
    hr_pixel_nm = hr_pixel_nm if hr_pixel_nm is not None else stack.pixel_nm
    if hr_pixel_nm is None:
        raise FactoryError(f"{image} does not record its pixel size; pass --hr-pixel-nm.")
    if hr_pixel_nm <= 0:
        raise FactoryError(f"--hr-pixel-nm must be > 0 nm, got {hr_pixel_nm:g}.")
    n, height, width = stack.data.shape
    k = cfg.downsample
    if height % k or width % k:
        raise FactoryError(f"--downsample {k} does not divide the image size {height}x{width} of {image}.")
    sidecar = out.with_name(out.stem + ".degradation.json")
    check_output(out, overwrite)
    check_output(sidecar, overwrite)

    lr = np.empty((n, height // k, width // k), np.float32 if no_noise else np.uint16)  # (N, h, w)
    records = []
    for i in range(n):
        hr = np.maximum(stack.data[i], 0.0)  # (H, W)
        peak = hr.max()
        hr = hr / peak if peak > 0 else hr  # normalized density in [0, 1]
        lr[i], params = degrade_sample(hr, hr_pixel_nm, cfg, seed, i, noise=not no_noise)
        records.append(params.to_record())
    lr_pixel_nm = hr_pixel_nm * k
    images.write_tiff(out, lr[0] if n == 1 else lr, lr_pixel_nm, overwrite=overwrite)
    meta = {"input": str(image), "output": str(out), "seed": seed, "hr_pixel_nm": hr_pixel_nm, "lr_pixel_nm": lr_pixel_nm,
            "values": "expected photons per LR pixel (float32)" if no_noise else "camera counts, ADU (uint16)",
            "config": cfg.to_dict(), "images": records}
    try:
        sidecar.write_text(json.dumps(meta, indent=1) + "\n")
    except OSError as exc:
        raise FactoryError(f"cannot write {sidecar}: {exc.strerror or exc}.") from None
    console.print(f"wrote {out}: {n} image{'s' if n > 1 else ''} of {height // k}x{width // k} px at {lr_pixel_nm:g} nm/px "
                  f"({meta['values']}); parameters in {sidecar.name}", highlight=False)
