"""Calibrate the optical model to a real microscope from the user's own images (``factory calibrate``).

    from factory.calibrate import CalibrateConfig, calibrate, write_toml
    cal = calibrate(CalibrateConfig(widefield=Path("wf.tif"), reference=Path("sr.tif")))
    print("\\n".join(cal.table_lines())); write_toml(cal, "optics.toml")   # -> factory generate --degradation optics.toml

Modules: ``camera`` (offset, gain, read noise by photon transfer with third moments),
``background`` (smooth map, mean, variation, correlation length), ``psf`` (width from spots and
filaments, or against a registered SR reference), ``estimate`` (the whole calibration),
``report`` (the table and the TOML), ``contrast`` (LR contrast of a store, to compare with the
image's).
"""
from factory.calibrate.estimate import CalibrateConfig, calibrate
from factory.calibrate.report import Calibration, Estimate, write_toml

__all__ = ["CalibrateConfig", "Calibration", "Estimate", "calibrate", "write_toml"]
