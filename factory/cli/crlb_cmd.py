"""``factory crlb``: the Cramér-Rao bound of one emitter's position, photons and background."""
from __future__ import annotations

import json
import math

import typer

from factory.cli.app import command
from factory.errors import FactoryError

# option -> (lowest allowed, open at the low end, highest allowed, unit) for one-sentence errors
_LIMITS = {"--photons": (0.0, True, math.inf, "photons"), "--background": (0.0, False, math.inf, "photons per pixel"),
           "--psf-sigma-nm": (0.0, True, math.inf, "nm"), "--pixel-nm": (0.0, True, math.inf, "nm"),
           "--read-noise": (0.0, False, math.inf, "e- rms"), "--em-gain": (1.0, False, math.inf, ""),
           "--qe": (0.0, True, 1.0, "")}


def _check(option: str, value: float) -> None:
    low, low_open, high, unit = _LIMITS[option]
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if math.isinf(high) else f" and <= {high:g}")
        raise FactoryError(f"{option} must be {bound}{' ' + unit if unit else ''}, got {value:g}.")


@command("crlb")
def crlb_command(
    photons: float = typer.Option(..., "--photons", help="Photons of the emitter in one frame, before QE (with the default --qe 1: detected photons)."),
    background: float = typer.Option(..., "--background", help="Background photons per camera pixel in that frame, before QE."),
    psf_sigma_nm: float = typer.Option(..., "--psf-sigma-nm", help="Standard deviation of the Gaussian PSF in the sample plane, nm."),
    pixel_nm: float = typer.Option(..., "--pixel-nm", help="Camera pixel size in the sample plane, nm."),
    read_noise: float = typer.Option(0.0, "--read-noise", help="Gaussian read noise, e- rms (Poisson-normal approximation, Huang et al. 2013)."),
    em_gain: float = typer.Option(1.0, "--em-gain", help="EM register gain; above 1 the excess noise factor sqrt 2 halves the Fisher information (Mortensen et al. 2010)."),
    qe: float = typer.Option(1.0, "--qe", help="Quantum efficiency in (0, 1]."),
    roi_px: int = typer.Option(None, "--roi-px", help="Odd side of the square ROI, camera pixels. (default: 2 ceil(4 sigma / pixel) + 1)"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: crlb_x_nm, crlb_y_nm [nm], crlb_photons [photons], crlb_background [photons per pixel], roi_px."),
) -> None:
    """Cramér-Rao lower bound (standard deviations) of x, y, photons and background for one emitter
    at the centre of a pixel, pixel-integrated Gaussian PSF, Poisson noise plus the camera's read
    noise and EM excess noise (factory.smlm.crlb). N = 1000, b = 10, sigma 130 nm, pixel 100 nm
    gives 5.63 nm, as Mortensen et al. 2010."""
    from factory.smlm.camera import CameraModel
    from factory.smlm.crlb import crlb, default_roi_px

    for option, value in (("--photons", photons), ("--background", background), ("--psf-sigma-nm", psf_sigma_nm),
                          ("--pixel-nm", pixel_nm), ("--read-noise", read_noise), ("--em-gain", em_gain), ("--qe", qe)):
        _check(option, value)
    if roi_px is not None and (roi_px < 3 or roi_px % 2 == 0):
        raise FactoryError(f"--roi-px must be an odd number of pixels >= 3, got {roi_px}.")
    k = roi_px or default_roi_px(psf_sigma_nm, pixel_nm)
    camera = CameraModel(qe=qe, read_noise_e=read_noise, em_gain=em_gain)
    bound = crlb(photons, background, psf_sigma_nm, pixel_nm, camera, roi_px=k)
    result = {"crlb_x_nm": float(bound.x_nm[0]), "crlb_y_nm": float(bound.y_nm[0]),
              "crlb_photons": float(bound.photons[0]), "crlb_background": float(bound.background[0]), "roi_px": k}
    if json_out:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"CRLB (standard deviation) for N = {photons:g} photons on {background:g} photons/px, "
               f"sigma {psf_sigma_nm:g} nm, pixel {pixel_nm:g} nm, {k}x{k} px ROI, emitter at a pixel centre:")
    typer.echo(f"  x           {result['crlb_x_nm']:.4g} nm")
    typer.echo(f"  y           {result['crlb_y_nm']:.4g} nm")
    typer.echo(f"  photons     {result['crlb_photons']:.4g} photons")
    typer.echo(f"  background  {result['crlb_background']:.4g} photons per pixel")
