"""Speed of `factory render` and `factory simulate`, each against a straightforward baseline, same run.

    .venv/bin/python benchmarks/structures.py [--locs 1000000] [--field-um 40] [--pixel-nm 20]

- CSV reading: pyarrow.csv (factory.render.read_localizations) vs numpy.loadtxt on the same
  ThunderSTORM file;
- Gaussian rendering: the vectorized splat vs a Python loop that adds each localization's
  (pixel-integrated, math.erf) patch (the loop is timed on a subset and scaled per localization);
  the histogram renderer for reference;
- the simulation: `simulate(n=16, size=256)` wall time, and per image.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from factory.render import TRUNCATE_SIGMA, LocalizationTable, RenderConfig, RenderMode, read_localizations, render
from factory.simulate import SimulationConfig, simulate


def best_of(fn, repeats: int = 3) -> float:
    fn()
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def loop_render(locs: LocalizationTable, shape: tuple[int, int], pixel_nm: float) -> np.ndarray:
    """The baseline: one localization at a time, pixel-integrated Gaussian patch with math.erf."""
    H, W = shape
    out = np.zeros(shape)
    for x, y, s in zip(locs.x_nm / pixel_nm, locs.y_nm / pixel_nm, locs.sigma_nm / pixel_nm):
        R = math.ceil(TRUNCATE_SIGMA * s)
        c0, r0 = math.floor(x) - R, math.floor(y) - R
        ex = [0.5 * math.erf((c0 + k - x) / (math.sqrt(2) * s)) for k in range(2 * R + 2)]
        ey = [0.5 * math.erf((r0 + k - y) / (math.sqrt(2) * s)) for k in range(2 * R + 2)]
        wx, wy = np.diff(ex), np.diff(ey)
        wx, wy = wx / wx.sum(), wy / wy.sum()
        rs, cs = slice(max(r0, 0), min(r0 + 2 * R + 1, H)), slice(max(c0, 0), min(c0 + 2 * R + 1, W))
        out[rs, cs] += np.outer(wy[rs.start - r0:rs.stop - r0], wx[cs.start - c0:cs.stop - c0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locs", type=int, default=1_000_000, help="localizations")
    ap.add_argument("--field-um", type=float, default=40.0, help="field side, um")
    ap.add_argument("--pixel-nm", type=float, default=20.0, help="pixel size, nm")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n, side_nm = args.locs, args.field_um * 1e3
    x, y, u = rng.uniform(0, side_nm, n), rng.uniform(0, side_nm, n), rng.gamma(4.0, 3.0, n) + 3.0  # u: 3-40 nm typical
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "locs.csv"
        frame = np.arange(n) // 100 + 1
        cols = np.column_stack([np.arange(1, n + 1), frame, x, y, np.full(n, 130.0), np.full(n, 900.0), np.full(n, 10.0), np.full(n, 3.0), u])
        np.savetxt(path, cols, fmt=["%d", "%d", "%.3f", "%.3f", "%.1f", "%.1f", "%.1f", "%.1f", "%.3f"], delimiter=",", comments="",
                   header='"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","offset [photon]","bkgstd [photon]","uncertainty [nm]"')
        size_mb = path.stat().st_size / 1e6
        t_arrow = best_of(lambda: read_localizations(path), 2)
        t_loadtxt = _timed(lambda: np.loadtxt(path, delimiter=",", skiprows=1, usecols=(2, 3, 8)))
        print(f"read {n} localizations ({size_mb:.0f} MB CSV): pyarrow {t_arrow:.2f} s, numpy.loadtxt {t_loadtxt:.2f} s, "
              f"ratio {t_loadtxt / t_arrow:.1f}x")
        locs = read_localizations(path)

    cfg = RenderConfig(pixel_nm=args.pixel_nm, origin_nm=(0, 0), size_nm=(side_nm, side_nm))
    t_hist = best_of(lambda: render(locs, RenderConfig(**{**cfg.__dict__, "mode": RenderMode.HISTOGRAM})))
    t_gauss = best_of(lambda: render(locs, cfg), 2)
    m = min(n, 20_000)
    sub = LocalizationTable(locs.x_nm[:m], locs.y_nm[:m], locs.sigma_nm[:m], None)
    shape = (round(side_nm / args.pixel_nm),) * 2
    t_loop = _timed(lambda: loop_render(sub, shape, args.pixel_nm)) * n / m
    ref, fast = loop_render(sub, shape, args.pixel_nm), render(sub, cfg)
    err = float(np.abs(ref - fast).max())
    print(f"render {n} localizations to {shape[1]} x {shape[0]} px: histogram {t_hist:.2f} s, gaussian {t_gauss:.2f} s "
          f"({n / t_gauss / 1e6:.2f} M locs/s), Python loop {t_loop:.1f} s (from {m}), ratio {t_loop / t_gauss:.0f}x, "
          f"max |difference| {err:.1e}")

    sim = SimulationConfig()
    t_sim = best_of(lambda: simulate(sim, 16, 0), 2)
    print(f"simulate n=16 size=256 ({sim.texture.value}): {t_sim:.2f} s ({t_sim / 16 * 1e3:.0f} ms per image)")


if __name__ == "__main__":
    main()
