"""The benchmark the product stands on: CARE trained on DDPM pairs vs math-model pairs vs real-structure pairs,
scored on real structure the DDPM never saw.

    python jobs/care_benchmark.py --out runs/care_bench                         # 3 arms x 2 seeds (hours on 2 CPU cores)
    python jobs/care_benchmark.py --out runs/care_bench --n 1000 --care-steps 1500 --seeds 0 1
    python jobs/care_benchmark.py --out runs/care_bench --model runs/other.safetensors --arms ddpm   # one lever

Every step runs the real CLI (``factory generate|care train|care apply|degrade|evaluate``) and is
skipped when its output exists, so an interrupted run resumes where it stopped (rerun the same
command; a changed setting needs a new ``--out``: the settings are kept in ``settings.json`` and a
different one is refused).

1. The real image (``data/cos7-tubulin-storm/cell1_storm.tif``, assumed 20 nm/px) is sum-binned to
   the HR grid (``--hr-pixel-nm``, 40 by default: the shipped DDPM's). Its right 20 % is the strip
   the shipped DDPM held out of training (``factory train`` holds out the right 20 % of every image);
   it is the test field. The left 80 % is the ``real`` arm's source.
2. Arms, same n, same optics (``--optics``), same CARE training, per seed:
   ``ddpm`` (``--structure ddpm``, the model of ``--model``), ``simulate`` (the mathematical
   microtubule model), ``real`` (``--structure images`` on the left 80 %: the upper bound).
3. The test strip is degraded twice with its own seed: ``nominal`` (the middle of the training
   ranges) and ``perturbed`` (PSF 25 % wider, fewer photons, more background: outside the training
   ranges). The test fields always use ``photon_scale = peak``; ``--photon-scale density`` changes
   only the training optics (the lever of issue 10: photons that mean the same for every source).
   Each CARE restores both (``care apply``), and ``evaluate`` scores them against the
   strip (sub-pixel registration, FRC at 1/7, Pearson r). Bicubic upsampling of the same widefield
   images is the floor.

Results: ``results.jsonl`` (one row per arm, seed and condition) and ``table.md`` (mean and
min-max over seeds per arm, and the DDPM / math-model FRC ratio the issue targets: <= 0.9).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "cos7-tubulin-storm" / "cell1_storm.tif"
REAL_PIXEL_NM = 20.0
HOLDOUT_FRACTION = 0.2  # factory train's held-out right strip
ARMS = ("ddpm", "simulate", "real")
CONDITIONS = ("nominal", "perturbed")

# The training optics: a widefield camera near the real pair's calibration (effective PSF sigma
# 155-165 nm, issue 10), sampled at downsample x the HR pixel.
OPTICS = """schema_version = 1
downsample = {downsample}
psf_sigma_nm = [140, 180]
photon_scale = "{scale}"
photons = {{low = {low:.4g}, high = {high:.4g}, log = true}}
background_photons = [5, 30]
"""
PEAK_PHOTONS = (100.0, 1000.0)  # signal photons at the brightest LR pixel (photon_scale = peak)
NOMINAL = {"psf-sigma-nm": 160, "photons": 300, "background": 15}
PERTURBED = {"psf-sigma-nm": 200, "photons": 80, "background": 45}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def factory(*args, cwd: Path | None = None) -> str:
    """Run the real CLI; a failure stops the benchmark with the CLI's own sentence."""
    cmd = [sys.executable, "-m", "factory", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"care_benchmark: `factory {' '.join(map(str, args))}` failed: "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def prepare_real(out: Path, hr_pixel_nm: float, multiple: int) -> tuple[Path, Path]:
    """(left 80 % TIFF, held-out strip TIFF) on the HR grid; the strip cropped to a multiple of ``multiple``."""
    from factory import images

    train_tif, strip_tif = out / "real_train.tif", out / "heldout_hr.tif"
    if train_tif.exists() and strip_tif.exists():
        return train_tif, strip_tif
    img = images.read_stack(REAL).data[0].astype(np.float64)
    k = images.binning_factor(hr_pixel_nm, REAL_PIXEL_NM, "--hr-pixel-nm")
    img = images.bin_sum(img, k)
    cut = int(round(img.shape[1] * (1 - HOLDOUT_FRACTION)))
    strip = img[:, cut:]
    h, w = (s // multiple * multiple for s in strip.shape)
    images.write_tiff(train_tif, img[:, :cut].astype(np.float32), hr_pixel_nm, overwrite=True)
    images.write_tiff(strip_tif, strip[:h, :w].astype(np.float32), hr_pixel_nm, overwrite=True)
    return train_tif, strip_tif


def density_photons(train_tif: Path, hr_size: int, hr_pixel_nm: float, downsample: int) -> tuple[float, float]:
    """``PEAK_PHOTONS`` restated for ``photon_scale = density``: divided by the median brightest-LR-pixel
    signal that one photon per unit density gives on the real arm's HR tiles (normalized as every
    source is, at the nominal PSF). The real structure then gets the same photons under both
    definitions, and every other source gets photons in proportion to its own density."""
    from factory import images
    from factory.optics.contrast import tiles
    from factory.optics.degrade import expected_photons
    from factory.optics.params import DegradationParams, PhotonScale

    hr, _ = images.normalize_unit(images.read_stack(train_tif).data[0].astype(np.float64))
    unit = DegradationParams(photons=1.0, photon_scale=PhotonScale.DENSITY, background_photons=0.0,
                             psf_sigma_nm=NOMINAL["psf-sigma-nm"], downsample=downsample)
    peak = expected_photons(tiles(hr, hr_size), hr_pixel_nm, unit).max(axis=(1, 2))  # (T,)
    per_photon = float(np.median(peak[peak > 0]))
    return PEAK_PHOTONS[0] / per_photon, PEAK_PHOTONS[1] / per_photon


def bicubic(lr_tif: Path, out: Path, factor: int) -> Path:
    """The floor: the widefield image (offset removed) upsampled by cubic splines to the HR grid."""
    from scipy.ndimage import zoom

    from factory import images

    if not out.exists():
        stack = images.read_stack(lr_tif)
        up = zoom(stack.data[0].astype(np.float64), factor, order=3)
        images.write_tiff(out, up.astype(np.float32), stack.pixel_nm / factor, overwrite=True)
    return out


def score(restored: Path, strip: Path) -> dict:
    return json.loads(factory("evaluate", restored, "--reference", strip, "--json"))


def summarize(rows: list[dict]) -> str:
    """Markdown: FRC (nm) and r per arm and condition, mean [min-max] over seeds, and the DDPM / math-model ratio."""
    lines = ["| arm | condition | seeds | FRC nm, mean [min-max] | Pearson r, mean [min-max] |", "|---|---|---|---|---|"]
    frc: dict[tuple[str, str], float] = {}
    for arm in (*ARMS, "bicubic"):
        for cond in CONDITIONS:
            sel = [r for r in rows if r["arm"] == arm and r["condition"] == cond]
            if not sel:
                continue
            f = np.array([r["frc_nm"] for r in sel], float)
            p = np.array([r["pearson_r"] for r in sel], float)
            frc[arm, cond] = float(f.mean())
            lines.append(f"| {arm} | {cond} | {len(sel)} | {f.mean():.1f} [{f.min():.1f}-{f.max():.1f}] | "
                         f"{p.mean():.3f} [{p.min():.3f}-{p.max():.3f}] |")
    for cond in CONDITIONS:
        if ("ddpm", cond) in frc and ("simulate", cond) in frc:
            lines.append(f"\nDDPM / math-model FRC ratio, {cond}: {frc['ddpm', cond] / frc['simulate', cond]:.3f} "
                         "(target <= 0.9)")
        if ("ddpm", cond) in frc and ("real", cond) in frc:
            lines.append(f"DDPM / real-structure FRC ratio, {cond}: {frc['ddpm', cond] / frc['real', cond]:.3f}")
    return "\n".join(lines) + "\n"


def run(a: argparse.Namespace) -> list[dict]:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in sorted(vars(a).items()) if k not in ("out", "arms", "seeds")}
    if settings["photon_scale"] == "peak":
        del settings["photon_scale"]  # the default is implied: runs made before the flag resume
    kept = out / "settings.json"
    if kept.exists() and json.loads(kept.read_text()) != settings:
        raise SystemExit(f"care_benchmark: {out} holds a run with other settings ({kept}); use another --out.")
    train_tif, strip = prepare_real(out, a.hr_pixel_nm, 4 * a.downsample)
    optics = out / "optics.toml"
    if not kept.exists():
        kept.write_text(json.dumps(settings, indent=1))
        low, high = (density_photons(train_tif, a.hr_size, a.hr_pixel_nm, a.downsample)
                     if a.photon_scale == "density" else PEAK_PHOTONS)
        optics.write_text(OPTICS.format(downsample=a.downsample, scale=a.photon_scale, low=low, high=high))
    widefield = {}
    for cond, params in (("nominal", NOMINAL), ("perturbed", PERTURBED)):
        widefield[cond] = out / f"heldout_lr_{cond}.tif"
        if not widefield[cond].exists():
            flags = [x for k, v in params.items() for x in (f"--{k}", v)]
            factory("degrade", strip, "--out", widefield[cond], "--downsample", a.downsample, "--seed", 999, *flags)
    rows_path = out / "results.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["arm"], r["seed"], r["condition"]) for r in rows}

    def record(row: dict) -> None:
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"{row['arm']} seed {row['seed']} {row['condition']}: FRC {row['frc_nm']:.1f} nm, r {row['pearson_r']:.3f}")

    for cond in CONDITIONS:
        if ("bicubic", 0, cond) not in done:
            record({"arm": "bicubic", "seed": 0, "condition": cond,
                    **score(bicubic(widefield[cond], out / f"bicubic_{cond}.tif", a.downsample), strip)})
    for seed in a.seeds:
        for arm in a.arms:
            if all((arm, seed, c) in done for c in CONDITIONS):
                continue
            tag = f"{arm}-s{seed}"
            store, model = out / f"{tag}.zarr", out / f"{tag}.care.safetensors"
            trained = out / f"{tag}.trained"  # written once care train has returned: the model is final
            if not trained.exists():
                source = {"ddpm": ["--structure", "ddpm", "--model", a.model, "--steps", a.ddpm_steps],
                          "simulate": ["--structure", "simulate", "--hr-pixel-nm", a.hr_pixel_nm],
                          "real": ["--structure", "images", "--images", train_tif, "--hr-pixel-nm", a.hr_pixel_nm]}[arm]
                log(f"{tag}: generate {a.n} pairs")  # resumes a partial store, no-op on a complete one
                factory("generate", "--n", a.n, "--out", store, "--seed", 1000 * seed + ARMS.index(arm),
                        "--degradation", optics, "--hr-size", a.hr_size, *source)
                log(f"{tag}: care train {a.care_steps} steps")
                factory("care", "train", "--store", store, "--out", model, "--steps", a.care_steps, "--seed", seed,
                        "--batch-size", a.batch_size, "--val-every", max(a.care_steps // 4, 1), "--threads", a.threads)
                trained.touch()
            for cond in CONDITIONS:
                if (arm, seed, cond) in done:
                    continue
                restored = out / f"{tag}_{cond}.tif"
                if not restored.exists():
                    factory("care", "apply", widefield[cond], "--model", model, "--out", restored)
                record({"arm": arm, "seed": seed, "condition": cond, **score(restored, strip)})
    (out / "table.md").write_text(summarize(rows))
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for every intermediate file and the results")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--n", type=int, default=2000, help="pairs per arm and seed")
    ap.add_argument("--hr-size", type=int, default=64, help="HR side, px")
    ap.add_argument("--hr-pixel-nm", type=float, default=40.0, help="HR pixel (the shipped DDPM's: 40)")
    ap.add_argument("--downsample", type=int, default=4, help="widefield pixel = downsample x HR pixel (160 nm, an EMCCD's)")
    ap.add_argument("--model", default="default", help="the ddpm arm's model")
    ap.add_argument("--ddpm-steps", type=int, default=20, help="the ddpm arm's sampler steps (DPM-Solver++)")
    ap.add_argument("--photon-scale", choices=("peak", "density"), default="peak",
                    help="what the training optics' photons mean (density: the peak range restated per unit "
                         "of HR density on the real arm's tiles; the test fields keep peak photons)")
    ap.add_argument("--care-steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for CARE training (0: torch's default)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    run(a)
    print((Path(a.out) / "table.md").read_text())


if __name__ == "__main__":
    main()
