"""Which CARE input normalization to ship, measured: percentile vs camera, against bicubic, on held-out fields.

    python benchmarks/care_normalization.py --store pairs.zarr --steps 1000 --seeds 0 1 \\
        [--storm data/cos7-tubulin-storm/cell1_storm.tif]

For each normalization and seed, ``factory.care.train`` trains the same network for the same
steps on the store (its last 4 shards held out). Each model then restores whole widefield fields
it never saw, made by the real optical model from a known HR density, and ``factory.evaluate``
scores the restoration against that density (registration, FRC at 1/7 in nm, Pearson r):

- ``math``: a 512 x 512 px field (20 um at 40 nm) of the mathematical microtubule model
  (``factory.simulate``), structure no DDPM drew;
- ``storm``: the held-out right 20 % of the real STORM image (20 nm pixels assumed, binned to
  40 nm), the strip the shipped DDPM was not trained on (only with ``--storm``).

Both are degraded with photons 1000 (peak), background 10 photons, PSF sigma 95 nm, the default
camera, LR 160 nm. Bicubic upsampling of the same LR frame (``scipy.ndimage.zoom``, order 3, on
the offset-subtracted frame) is the baseline. Prints one table; ratios within a run are what to read.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom

from factory import images
from factory.care import checkpoint
from factory.care.apply import ApplyConfig, restore
from factory.care.network import NetworkConfig
from factory.care.train import CareTrainConfig, train
from factory.evaluate import EvaluateConfig, score
from factory.optics import DegradationParams, degrade
from factory.simulate import SimulationConfig, simulate_image

HR_NM, K = 40.0, 4
OPTICS = DegradationParams(photons=1000.0, background_photons=10.0, psf_sigma_nm=95.0, downsample=K)


def fields(storm: Path | None) -> dict[str, np.ndarray]:
    """Held-out HR densities (H, W) at 40 nm, sides a multiple of 4."""
    out = {"math": simulate_image(SimulationConfig(size_px=512, pixel_nm=HR_NM), np.random.default_rng(12345))}
    if storm is not None:
        sr = images.read_stack(storm).data[0]
        strip = sr[:, int(0.8 * sr.shape[1]):]  # the right 20 %: held out of the shipped model's training
        binned = images.normalize_unit(images.bin_sum(strip, 2))[0]  # 20 nm -> 40 nm, scaled like training
        h, w = (s - s % 16 for s in binned.shape)
        out["storm"] = binned[:h, :w]
    return out


def bicubic(lr_adu: np.ndarray) -> np.ndarray:
    return zoom(lr_adu - OPTICS.offset_adu, K, order=3, grid_mode=True, mode="nearest")


def tiling_gap(model, lr: np.ndarray, camera: dict) -> list[str]:
    """How far tiled restorations (256 px tiles) are from the whole-field one, per overlap."""
    t0 = time.time()
    whole = restore(lr, K * HR_NM, model, ApplyConfig(tile=None, camera=camera))
    lines = [f"whole field {whole.shape[0]}x{whole.shape[1]} px: {time.time() - t0:.2f} s"]
    scale = float(np.percentile(whole, 99.9))
    for overlap in (32, 64, 112):
        t0 = time.time()
        tiled = restore(lr, K * HR_NM, model, ApplyConfig(tile=256, overlap=overlap, camera=camera))
        gap = np.abs(tiled - whole) / scale
        lines.append(f"overlap {overlap:3d}: max {gap.max():.2e}, mean {gap.mean():.2e}, {time.time() - t0:.2f} s")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--storm", type=Path, default=None)
    a = ap.parse_args(argv)
    tests = {name: (hr, degrade(hr, HR_NM, OPTICS, np.random.default_rng(7)).astype(np.float64))
             for name, hr in fields(a.storm).items()}
    rows, tiling = [], []
    for name, (hr, lr) in tests.items():
        s = score(bicubic(lr), hr, HR_NM, EvaluateConfig())
        rows.append((name, "bicubic", "-", s.frc_nm, s.pearson_r, s.shift_px, float("nan"), float("nan")))
    with tempfile.TemporaryDirectory() as tmp:
        for norm in ("percentile", "camera"):
            for seed in a.seeds:
                out = Path(tmp) / f"{norm}-{seed}.safetensors"
                t0 = time.time()
                result = train(CareTrainConfig(store=a.store, out=str(out), steps=a.steps, batch_size=a.batch_size,
                                               network=NetworkConfig(2, 16), norm=norm, val_shards=4, val_every=a.steps,
                                               checkpoint_every=a.steps, seed=seed, threads=a.threads, log_every_s=60.0),
                               log=lambda line: print("   ", line, flush=True))
                model = checkpoint.load(out)
                camera = {"offset_adu": OPTICS.offset_adu, "gain_e_per_adu": OPTICS.gain_e_per_adu, "em_gain": 1.0}
                for name, (hr, lr) in tests.items():
                    restored = restore(lr, K * HR_NM, model, ApplyConfig(tile=None, camera=camera))
                    s = score(restored, hr, HR_NM, EvaluateConfig())
                    rows.append((name, f"CARE {norm}", seed, s.frc_nm, s.pearson_r, s.shift_px,
                                 result.metrics.get("frc_nm") or float("nan"), result.metrics.get("psnr_db", float("nan"))))
                print(f"  trained {norm} seed {seed} in {time.time() - t0:.0f} s", flush=True)
                if norm == "percentile" and seed == a.seeds[0]:
                    tiling = tiling_gap(model, tests["math"][1], camera)
    print("\ntiled vs whole-field apply (math field, first percentile model): |tiled - whole| / p99.9(whole), seconds per call")
    for line in tiling:
        print("  " + line)
    print(f"\n{'field':6} {'method':16} {'seed':>4} {'FRC nm':>7} {'r':>6} {'shift px':>14} {'val FRC':>8} {'val PSNR':>8}")
    for name, method, seed, frc, r, shift, vfrc, vpsnr in rows:
        frc_text = f"{frc:7.1f}" if frc is not None else "  < 2px"
        print(f"{name:6} {method:16} {seed!s:>4} {frc_text} {r:6.3f} {shift[0]:+6.2f},{shift[1]:+6.2f} {vfrc:8.1f} {vpsnr:8.2f}")


if __name__ == "__main__":
    main()
