"""jobs/care_benchmark.py end to end at toy size through the real CLI: rows per arm and condition, resume, summary."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import care_benchmark  # noqa: E402

TOY = ["--n", "32", "--care-steps", "2", "--seeds", "0", "--arms", "simulate", "real", "--batch-size", "4",
       "--threads", "1"]


def test_benchmark_scores_every_arm_on_the_held_out_strip_and_resumes(tmp_path):
    out = tmp_path / "bench"
    care_benchmark.main(["--out", str(out), *TOY])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["condition"]) for r in rows} == {(a, c) for a in ("simulate", "real", "bicubic")
                                                         for c in care_benchmark.CONDITIONS}
    for r in rows:
        assert 0 < r["frc_nm"] < 5000 and -1 <= r["pearson_r"] <= 1 and "shift_px" in r
    # the test field is the strip the DDPM never saw: the right 20 % of the real image, on the HR grid
    from factory import images
    strip = images.read_stack(out / "heldout_hr.tif")
    assert strip.pixel_nm == pytest.approx(40.0) and strip.data.shape[-1] < strip.data.shape[-2] / 3
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    care_benchmark.main(["--out", str(out), *TOY])  # rerun: everything is there, nothing is redone
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "table.md"} == \
        {k: v for k, v in stamp.items() if k != "table.md"}
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    with pytest.raises(SystemExit, match="other settings"):
        care_benchmark.main(["--out", str(out), "--n", "64", *TOY[2:]])


def test_summary_reports_the_ratio_the_issue_targets():
    rows = [{"arm": a, "seed": s, "condition": "nominal", "frc_nm": f, "pearson_r": 0.8}
            for a, s, f in (("ddpm", 0, 100.0), ("ddpm", 1, 110.0), ("simulate", 0, 140.0), ("real", 0, 90.0))]
    text = care_benchmark.summarize(rows)
    assert "| ddpm | nominal | 2 | 105.0 [100.0-110.0] |" in text
    assert "DDPM / math-model FRC ratio, nominal: 0.750" in text
    assert "DDPM / real-structure FRC ratio, nominal: 1.167" in text


def test_density_photons_give_the_real_tiles_the_peak_photons(tmp_path):
    """--photon-scale density restates PEAK_PHOTONS per unit density: at the restated low end, the
    median real tile's brightest LR pixel gets PEAK_PHOTONS[0] signal photons, which is what
    photon_scale = peak gives every tile (checked through the peak path of expected_photons)."""
    import numpy as np

    from factory import images
    from factory.optics.config import DegradationConfig
    from factory.optics.contrast import tiles
    from factory.optics.degrade import expected_photons
    from factory.optics.params import DegradationParams, PhotonScale

    rng = np.random.default_rng(0)
    img = np.zeros((256, 192))
    for _ in range(40):  # random straight filaments of random brightness
        y, x, angle, b = rng.uniform(0, 256), rng.uniform(0, 192), rng.uniform(0, np.pi), rng.uniform(0.2, 1)
        t = np.arange(-150, 150, 0.5)
        yy, xx = np.round(y + t * np.sin(angle)).astype(int), np.round(x + t * np.cos(angle)).astype(int)
        keep = (yy >= 0) & (yy < 256) & (xx >= 0) & (xx < 192)
        img[yy[keep], xx[keep]] = np.maximum(img[yy[keep], xx[keep]], b)
    tif = tmp_path / "real.tif"
    images.write_tiff(tif, (img * 37.0).astype(np.float32), 40.0)  # the scale must not matter
    low, high = care_benchmark.density_photons(tif, 64, 40.0, 4)
    assert high / low == pytest.approx(10.0)
    hr = tiles(images.normalize_unit(img)[0], 64)
    nominal = dict(background_photons=0.0, psf_sigma_nm=care_benchmark.NOMINAL["psf-sigma-nm"], downsample=4)
    dens = expected_photons(hr, 40.0, DegradationParams(photons=low, photon_scale=PhotonScale.DENSITY, **nominal))
    peak = expected_photons(hr, 40.0, DegradationParams(photons=care_benchmark.PEAK_PHOTONS[0], **nominal))
    assert np.allclose(peak.max(axis=(1, 2)), care_benchmark.PEAK_PHOTONS[0], rtol=1e-4)  # every tile, by definition
    assert np.median(dens.max(axis=(1, 2))) == pytest.approx(care_benchmark.PEAK_PHOTONS[0], rel=1e-4)
    assert dens.max() > care_benchmark.PEAK_PHOTONS[0]  # density: brighter tiles get more photons, unlike peak
    toml = tmp_path / "optics.toml"
    toml.write_text(care_benchmark.OPTICS.format(downsample=4, scale="density", low=low, high=high))
    cfg = DegradationConfig.load(toml)
    assert cfg.photon_scale is PhotonScale.DENSITY and cfg.photons.low == pytest.approx(low, rel=1e-3)
