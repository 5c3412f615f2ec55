"""How well ``factory calibrate`` recovers known optics: errors over seeds, PSF widths, signal levels and inputs.

    python benchmarks/calibrate_accuracy.py --seeds 0 1 2

Each case is a 256 x 256 px widefield field (160 nm pixels) made by ``factory.optics`` from a
mathematical-model HR density at 40 nm (thin filaments and isolated spots, as tests/test_calibrate.py),
with background 10 photons varying by 30 %, the default camera (offset 100 ADU, 0.5 e-/ADU, 1.6 e-,
QE 0.8), calibrated from: a 20-frame stack; one frame with 8 dark frames; one frame alone; one
frame with dark frames and the SR reference. Prints, per input, the mean and worst error of each
estimate over the cases; the issue's tolerances are PSF sigma 10 %, offset 1 ADU, photons 15 %.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from factory import images  # noqa: E402
from factory.calibrate import CalibrateConfig, calibrate  # noqa: E402
from factory.optics import DegradationParams, expected_photons  # noqa: E402
from factory.optics.camera import detect  # noqa: E402
from test_calibrate import HR_NM, LR_NM, TRUTH, field  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args(argv)
    errors: dict[str, list[tuple]] = {}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for seed in a.seeds:
            hr = field(seed)
            images.write_tiff(d / "sr.tif", hr.astype(np.float32), pixel_nm=HR_NM, overwrite=True)
            for sigma in (95.0, 160.0):
                for photons in (300.0, 1000.0):
                    p = DegradationParams(**{**TRUTH.to_record(), "psf_sigma_nm": sigma, "photons": photons, "background_seed": seed})
                    e = expected_photons(hr, HR_NM, p)
                    rng = np.random.default_rng(seed)
                    images.write_tiff(d / "wf.tif", detect(e, p, rng), pixel_nm=LR_NM, overwrite=True)
                    images.write_tiff(d / "wf20.tif", detect(np.broadcast_to(e, (20, *e.shape)), p, rng), pixel_nm=LR_NM, overwrite=True)
                    dark = DegradationParams(**{**p.to_record(), "photons": 0.0, "background_photons": 0.0})
                    images.write_tiff(d / "dark.tif", detect(np.zeros((8, *e.shape)), dark, rng), pixel_nm=LR_NM, overwrite=True)
                    inputs = {"20-frame stack": dict(widefield=d / "wf20.tif"),
                              "1 frame + dark": dict(widefield=d / "wf.tif", dark=d / "dark.tif"),
                              "1 frame alone": dict(widefield=d / "wf.tif"),
                              "1 frame + dark + SR": dict(widefield=d / "wf.tif", dark=d / "dark.tif", reference=d / "sr.tif")}
                    for name, kw in inputs.items():
                        t0 = time.time()
                        est = {x.name: x.value for x in calibrate(CalibrateConfig(**kw)).estimates}
                        times.setdefault(name, []).append(time.time() - t0)
                        errors.setdefault(name, []).append((
                            est["psf_sigma_nm"] / sigma - 1, est["offset_adu"] - 100.0, est["photons (field peak)"] / photons - 1,
                            est["gain_e_per_adu"] / 0.5 - 1, est["background_photons"] / 10.0 - 1))
    print(f"{len(a.seeds)} seeds x PSF sigma (95, 160 nm) x photons (300, 1000); mean / worst error")
    print(f"{'input':22} {'PSF sigma %':>14} {'offset ADU':>14} {'photons %':>14} {'gain %':>14} {'background %':>14} {'s/call':>7}")
    for name, rows in errors.items():
        r = np.asarray(rows)
        cells = []
        for j, scale in enumerate((100, 1, 100, 100, 100)):
            col = r[:, j] * scale
            cells.append(f"{col.mean():+6.1f} / {col[np.argmax(np.abs(col))]:+6.1f}")
        print(f"{name:22} " + " ".join(f"{c:>14}" for c in cells) + f" {np.mean(times[name]):7.1f}")


if __name__ == "__main__":
    main()
