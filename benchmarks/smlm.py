"""The SMLM stage's speed next to the DDPM sampler, and the MLE baseline against the Cramér-Rao bound.

    .venv/bin/python benchmarks/smlm.py [--frames 200] [--threads 1] [--emitters 2000] [--no-ddpm]

1. Frames per second of ``simulate_sample`` per core (BLAS/OpenMP on --threads threads, set before
   numpy loads) on a 256x256 HR density at 40 nm (the mathematical microtubule model) -> 64x64
   camera pixels of 160 nm, at about 10, 30 and 50 active emitters per frame (k_on tuned), with the
   stage split into its parts (labels + blinking, frames + camera, KDE, per-row CRLB).
2. The shipped DDPM's sampling time per HR image (DPM-Solver++ 20 steps, batch 8, 64x64, same
   threads), measured here unless --no-ddpm (then the README's 2.8 images/s on 2 threads), and the
   ratio: how many SMLM samples of --frames frames one core makes while the sampler makes one image.
3. The CRLB check (N = 1000, b = 10, sigma 130 nm, a = 100 nm vs Mortensen et al. 2010 eq. 6) and
   the MLE-vs-CRLB table: --emitters isolated emitters per photon count, uniform in the central pixel
   of a 13x13 ROI, simulated through the real image formation and camera chain, for three cameras.
"""
from __future__ import annotations

import argparse
import math
import os
import time

_threads = argparse.ArgumentParser(add_help=False)
_threads.add_argument("--threads", type=int, default=1)
THREADS = _threads.parse_known_args()[0].threads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)  # before numpy loads its BLAS

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402

from factory.seeding import degradation_rng  # noqa: E402
from factory.simulate import SimulationConfig, simulate  # noqa: E402
from factory.smlm import CameraModel, SmlmParams, crlb, expected_frames, fit_mle, simulate_sample  # noqa: E402
from factory.smlm.blinking import blink, draw_brightness  # noqa: E402
from factory.smlm.crlb import default_roi_px, emitter_crlb  # noqa: E402
from factory.smlm.emitters import draw_labels  # noqa: E402
from factory.smlm.frames import background_map, camera_frames  # noqa: E402
from factory.smlm.kde import kde_frames  # noqa: E402

HR_PIXEL_NM = 40.0
README_DDPM_IMAGES_PER_S = 2.8  # DPM-Solver++ 20 steps, batch 8, 2 threads (README, jobs/model_card.py)


def cpu_seconds(fn) -> float:
    """Best of three CPU-time measurements of fn() (time.process_time: per core, robust to a busy machine)."""
    best = math.inf
    for _ in range(3):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def parts(hr: np.ndarray, params: SmlmParams) -> dict[str, float]:
    """CPU seconds of each part of the stage, same order and draws as simulate_sample."""
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    c0 = time.process_time()
    labels = draw_labels(hr, HR_PIXEL_NM, params.labels_per_um2, rng)
    brightness = draw_brightness(len(labels), params, rng)
    blinks = blink(len(labels), params, rng)
    x, y = labels.x_nm[blinks.emitter], labels.y_nm[blinks.emitter]
    photons = brightness[blinks.emitter] * blinks.on_fraction
    c1 = time.process_time()
    bg = background_map(params, (64, 64), 160.0)
    frames = camera_frames(expected_frames(x, y, photons, blinks.frame, params.n_frames, (64, 64), 160.0,
                                           params.psf_sigma_nm, bg), params, rng)
    c2 = time.process_time()
    kde_frames(x, y, blinks.frame, params.n_frames, hr.shape, HR_PIXEL_NM, params.kde_sigma_nm)
    c3 = time.process_time()
    emitter_crlb(x, y, photons, bg, params.psf_sigma_nm, 160.0, CameraModel.from_params(params))
    c4 = time.process_time()
    out.update({"labels+blinking": c1 - c0, "frames+camera": c2 - c1, "kde": c3 - c2, "crlb": c4 - c3})
    assert frames.shape == (params.n_frames, 64, 64)
    return out


def tuned_params(hr: np.ndarray, target: float, frames: int) -> SmlmParams:
    """Params whose stack has about `target` active emitters per frame (k_on scaled from one trial)."""
    base = SmlmParams(labels_per_um2=100.0, k_on_per_s=0.1, k_off_per_s=30.0, k_bleach_per_s=0.5, frame_time_ms=20.0,
                      psf_sigma_nm=110.0, background_photons=20.0, n_frames=frames)
    for _ in range(3):
        got = simulate_sample(hr, HR_PIXEL_NM, base, np.random.default_rng(1)).stats["emitters_per_frame"]
        base = dataclasses.replace(base, k_on_per_s=base.k_on_per_s * target / max(got, 1e-3))
    return base


def ddpm_seconds_per_image() -> float:
    import torch

    from factory.diffusion import checkpoint
    from factory.diffusion.sampling import SamplerConfig, SamplerKind, sample_images

    torch.set_num_threads(THREADS)
    ckpt = checkpoint.load("default")
    cfg = SamplerConfig(kind=SamplerKind.dpmpp, steps=20)
    sample_images(ckpt, sample_ids=range(2), run_seed=0, cfg=cfg)  # warm-up
    w0 = time.perf_counter()
    sample_images(ckpt, sample_ids=range(8), run_seed=0, cfg=cfg)
    return (time.perf_counter() - w0) / 8


def mortensen_nm(n: float, b: float, sigma: float, a: float) -> float:
    s_a2 = sigma**2 + a**2 / 12
    tau = 2 * math.pi * s_a2 * b / (n * a**2)
    return math.sqrt(s_a2 / n / (1 + scipy.integrate.quad(lambda t: math.log(t) / (1 + t / tau), 0, 1)[0]))


def mle_table(n: int) -> None:
    sigma, a, b = 130.0, 100.0, 10.0
    k = default_roi_px(sigma, a)
    cameras = {"ideal (QE 1, no read noise)": SmlmParams(qe=1.0, read_noise_e=0.0, gain_e_per_adu=1.0, offset_adu=0.0),
               "sCMOS (QE 0.8, 1.6 e-)": SmlmParams(qe=0.8, read_noise_e=1.6, gain_e_per_adu=0.5, offset_adu=100.0),
               "EMCCD (QE 0.95, gain 100, 50 e-)": SmlmParams(qe=0.95, read_noise_e=50.0, em_gain=100.0,
                                                             gain_e_per_adu=20.0, offset_adu=100.0)}
    print(f"\nMLE vs CRLB: {n} isolated emitters per row, b = {b:g} photons/px, sigma {sigma:g} nm, pixel {a:g} nm, "
          f"{k}x{k} ROI, x and y pooled")
    print("| camera | photons | RMSE (nm) | CRLB (nm) | RMSE / CRLB | converged | ms per 1000 ROIs |")
    print("|---|---|---|---|---|---|---|")
    for name, params in cameras.items():
        model = CameraModel.from_params(params)
        for photons in (200.0, 500.0, 1000.0, 2000.0, 5000.0):
            rng = np.random.default_rng(int(photons))
            dx, dy = rng.uniform(-0.5, 0.5, (2, n))
            x, y = (k // 2 + 0.5 + dx) * a, (k // 2 + 0.5 + dy) * a
            rois = camera_frames(expected_frames(x, y, np.full(n, photons), np.arange(n), n, (k, k), a, sigma, b),
                                 params, rng)
            w0 = time.perf_counter()
            fit = fit_mle(rois, sigma, a, model)
            ms = (time.perf_counter() - w0) * 1e3 * 1000 / n
            bound = crlb(photons, b, sigma, a, model, dx_px=dx, dy_px=dy, roi_px=k)
            rmse = math.sqrt(np.mean(np.concatenate([fit.x_nm - x, fit.y_nm - y]) ** 2))
            rms_bound = math.sqrt(np.mean(np.concatenate([bound.x_nm, bound.y_nm]) ** 2))
            print(f"| {name} | {photons:g} | {rmse:.3f} | {rms_bound:.3f} | {rmse / rms_bound:.3f} | "
                  f"{fit.converged.mean():.3f} | {ms:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--emitters", type=int, default=2000)
    ap.add_argument("--no-ddpm", action="store_true")
    args = ap.parse_args()

    hr = simulate(SimulationConfig(size_px=256, pixel_nm=HR_PIXEL_NM, texture="smooth"), 1, seed=0)[0]  # (256, 256)
    print(f"SMLM stage, HR 256x256 at {HR_PIXEL_NM:g} nm -> 64x64 camera px of 160 nm, {args.frames} frames, "
          f"{THREADS} thread(s), CPU time (best of 3)")
    print("| emitters/frame | frames/s per core | with KDE off: frames/s | labels+blinking | frames+camera | KDE | CRLB |")
    print("|---|---|---|---|---|---|---|")
    per_sample = {}
    for target in (10, 30, 50):
        params = tuned_params(hr, target, args.frames)
        rng_seed = 7
        got = simulate_sample(hr, HR_PIXEL_NM, params, degradation_rng(rng_seed, 0)).stats["emitters_per_frame"]
        total = cpu_seconds(lambda: simulate_sample(hr, HR_PIXEL_NM, params, degradation_rng(rng_seed, 0)))
        split = parts(hr, params)
        no_kde = total - split["kde"]
        per_sample[target] = total
        print(f"| {got:.1f} | {args.frames / total:.0f} | {args.frames / no_kde:.0f} | "
              + " | ".join(f"{1e3 * v / args.frames:.3f} ms" for v in split.values()) + " |")

    small = hr[96:160, 96:160]  # the shipped model's geometry: HR 64x64 -> 16x16 camera px, same densities
    small_params = tuned_params(small, 30 / 16, args.frames)
    small_s = cpu_seconds(lambda: simulate_sample(small, HR_PIXEL_NM, small_params, degradation_rng(7, 0)))
    print(f"shipped-model geometry (HR 64x64 -> 16x16 px, ~1.9 emitters/frame = 30 per 64x64 px): "
          f"{args.frames / small_s:.0f} frames/s per core")

    if args.no_ddpm:
        s_per_image, source = 1 / README_DDPM_IMAGES_PER_S, "README: 2.8 images/s on 2 threads"
    else:
        s_per_image, source = ddpm_seconds_per_image(), f"measured, {THREADS} thread(s)"
    print(f"\nshipped DDPM, DPM-Solver++ 20 steps, 64x64, batch 8: {s_per_image:.3f} s per HR image ({source})")
    for target, seconds in per_sample.items():
        print(f"  {target} emitters/frame: one SMLM sample of {args.frames} frames = {seconds:.3f} CPU s; "
              f"sampling one HR image / SMLM stage for its sample = {s_per_image / seconds:.1f}x")
    print(f"  shipped geometry: one SMLM sample of {args.frames} frames = {small_s:.3f} CPU s; "
          f"ratio {s_per_image / small_s:.1f}x")

    bound = crlb(1000.0, 10.0, 130.0, 100.0)
    print(f"\nCRLB check: N 1000, b 10, sigma 130 nm, a 100 nm -> {bound.x_nm[0]:.3f} nm "
          f"(Mortensen et al. 2010 eq. 6: {mortensen_nm(1000, 10, 130, 100):.3f} nm)")
    mle_table(args.emitters)


if __name__ == "__main__":
    main()
