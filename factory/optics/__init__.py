"""The optical degradation chain: HR density -> PSF -> binning -> background -> camera -> LR.

    from factory.optics import DegradationConfig, DegradationParams, expected_photons, degrade
    cfg = DegradationConfig(photons=(200, 2000), psf_sigma_nm=95)   # run level: values or ranges
    params = cfg.draw(rng)                                          # one sample, its own generator
    lr = degrade(hr, hr_pixel_nm, params, rng)                      # (..., H//k, W//k) uint16 ADU

Modules, in the order light meets them: ``psf`` (kernel, blur+bin matrix), ``background``,
``camera``; ``degrade`` chains them; ``params`` / ``config`` hold the values and their ranges;
``contrast`` measures the LR structure-to-background contrast that ``photon_scale`` controls.
"""
from factory.optics.config import DegradationConfig, Range
from factory.optics.degrade import degrade, degrade_sample, expected_photons
from factory.optics.params import DegradationParams, PhotonScale, PsfModel

__all__ = ["DegradationConfig", "DegradationParams", "PhotonScale", "PsfModel", "Range", "degrade", "degrade_sample",
           "expected_photons"]
