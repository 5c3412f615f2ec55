"""Throughput of factory's optical degradation vs a straightforward scipy pipeline, same run, same params.

    .venv/bin/python benchmarks/degrade.py [--batch 64] [--size 256] [--downsample 4] [--hr-pixel-nm 40] [--threads 1]

Baseline: scipy.ndimage.gaussian_filter (reflect, truncate 4: the same PSF as factory's gaussian
model) + reshape-sum binning + numpy Poisson + normal read noise + gain/offset/round/clip, on a
flat background (factory's structured background is timed separately). Prints images/s, the
ratio, CPU seconds per image (time.process_time) and the effective threads (CPU time / wall
time), the blur+bin stage alone by three methods (how the matrix method was chosen), and the
per-sample path a pipeline uses (one draw and one degrade call per image, its own generator).

BLAS and OpenMP get --threads threads (default 1: what a 1-CPU Ray degrade task gets, since Ray
sets OMP_NUM_THREADS to the task's CPUs), set before numpy is imported.
"""
from __future__ import annotations

import argparse
import os
import time

_threads = argparse.ArgumentParser(add_help=False)
_threads.add_argument("--threads", type=int, default=1)
THREADS = _threads.parse_known_args()[0].threads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)  # before numpy loads its BLAS

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.ndimage  # noqa: E402

from factory.optics import DegradationConfig, degrade  # noqa: E402
from factory.optics.psf import blur_bin_matrix  # noqa: E402
from factory.seeding import degradation_rng  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best-of-repeats (wall s, CPU s) of one call, after one warm-up call."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def baseline(hr, sigma_px, k, p, rng):
    """The straightforward pipeline: scipy blur at HR, bin, scale, flat background, noise, camera."""
    n, height, width = hr.shape
    blurred = scipy.ndimage.gaussian_filter(hr, sigma=(0, sigma_px, sigma_px), mode="reflect", truncate=4.0)
    binned = blurred.reshape(n, height // k, k, width // k, k).sum(axis=(2, 4))  # (N, h, w)
    expected = binned * (p.photons / binned.max(axis=(1, 2), keepdims=True)) + p.background_photons
    electrons = rng.poisson(p.qe * expected) + p.read_noise_e * rng.standard_normal(expected.shape)
    adu = np.rint(electrons / p.gain_e_per_adu + p.offset_adu)
    return np.clip(adu, 0, 2**p.bit_depth - 1).astype(np.uint16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256, help="HR side, pixels")
    ap.add_argument("--downsample", type=int, default=4)
    ap.add_argument("--hr-pixel-nm", type=float, default=40.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (read before numpy is imported)")
    args = ap.parse_args()
    n, size, k = args.batch, args.size, args.downsample

    rng = np.random.default_rng(0)
    hr = rng.random((n, size, size), dtype=np.float32) ** 8  # (N, H, W) sparse bright structure
    flat = DegradationConfig(downsample=k, background_variation=0.0)
    params = flat.draw(rng)
    structured = DegradationConfig(downsample=k, background_variation=0.3).draw(rng)
    sigma_px = params.psf_sigma_nm / args.hr_pixel_nm
    print(f"HR {size}x{size} -> LR {size // k}x{size // k}, batch {n}, HR pixel {args.hr_pixel_nm:g} nm, {THREADS} BLAS thread(s), "
          f"PSF sigma {params.psf_sigma_nm:g} nm = {sigma_px:.2f} HR px, {params.photons:g} photons")

    runs = {
        "scipy baseline": lambda: baseline(hr, sigma_px, k, params, rng),
        "factory degrade (flat background)": lambda: degrade(hr, args.hr_pixel_nm, params, rng),
        "factory degrade (structured background)": lambda: degrade(hr, args.hr_pixel_nm, structured, rng),
    }
    results = {name: timed(fn, args.repeats) for name, fn in runs.items()}
    print(f"\n{'whole chain, one call per batch':42s} {'images/s':>10s} {'CPU ms/img':>11s} {'threads':>8s}")
    for name, (wall, cpu) in results.items():
        print(f"{name:42s} {n / wall:10.0f} {1e3 * cpu / n:11.3f} {cpu / wall:8.2f}")
    base_wall, base_cpu = results["scipy baseline"]
    for name in list(runs)[1:]:
        wall, cpu = results[name]
        print(f"speed-up vs baseline, {name.removeprefix('factory degrade ')}: {base_wall / wall:.1f}x wall time, "
              f"{base_cpu / cpu:.1f}x CPU time")

    m_y = blur_bin_matrix(size, k, sigma_px, params.psf_model).astype(np.float32)  # (h, H)
    m_x_t = np.ascontiguousarray(m_y.T)  # (W, w)
    transfer = None

    def fft_blur_bin():
        nonlocal transfer
        spectrum = scipy.fft.rfft2(hr, workers=THREADS)  # (N, H, W//2+1)
        if transfer is None:
            fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
            transfer = np.exp(-2 * (np.pi * sigma_px) ** 2 * (fy**2 + fx**2)).astype(np.float32)
        blurred = scipy.fft.irfft2(spectrum * transfer, s=(size, size), workers=THREADS)
        return blurred.reshape(n, size // k, k, size // k, k).sum(axis=(2, 4))

    stages = {
        "matrix M_y @ HR @ M_x^T (factory)": lambda: np.matmul(m_y, (hr.reshape(-1, size) @ m_x_t).reshape(n, size, -1)),
        "scipy gaussian_filter + bin": lambda: scipy.ndimage.gaussian_filter(hr, (0, sigma_px, sigma_px), truncate=4.0)
        .reshape(n, size // k, k, size // k, k).sum(axis=(2, 4)),
        "FFT float32 (periodic borders) + bin": fft_blur_bin,
    }
    print(f"\n{'blur + bin stage only':42s} {'images/s':>10s} {'CPU ms/img':>11s}")
    for name, fn in stages.items():
        wall, cpu = timed(fn, args.repeats)
        print(f"{name:42s} {n / wall:10.0f} {1e3 * cpu / n:11.3f}")

    cfg = DegradationConfig(downsample=k, photons=(200, 2000), psf_sigma_nm=(80, 110))

    def per_sample():
        for i in range(n):
            sample_rng = degradation_rng(0, i)
            degrade(hr[i], args.hr_pixel_nm, cfg.draw(sample_rng), sample_rng)

    wall, cpu = timed(per_sample, max(1, args.repeats // 2))
    print(f"\nper-sample path (own rng, drawn params incl. PSF width and structured background, one call per image):\n"
          f"  {n / wall:.0f} images/s, {1e3 * cpu / n:.3f} CPU ms/image -> one core keeps up with a sampler making "
          f"{n / cpu:.0f} HR images/s")


if __name__ == "__main__":
    main()
