"""The evaluation the conditional model claims: lateral RMSE next to the Cramér-Rao bound and the MLE baseline,
with Jaccard, over photon counts and emitter densities, on held-out frames.

    python jobs/smlm_eval.py --model runs/smlm/model.safetensors --store runs/smlm/data.zarr --out runs/smlm/eval
    python jobs/smlm_eval.py --model smlm --store smlm.zarr --out eval --photons 200 1000 5000 --samples 8

Held-out structure: the HR densities of the store's last shard (the one ``train-smlm`` holds out).
For every (photons, density) condition, each of ``--hr`` densities becomes ``--frames`` camera frames
through the real SMLM stage (``factory.smlm.simulate_sample``) with fixed settings: brightness N
photons per full on-frame (no spread), 100 labels per µm² at mean density, k_off 20/s, k_on set for
the target active-emitter density (duty k_on / (k_on + k_off)), 10 ms frames, no bleaching, PSF sigma
110 nm, 20 background photons per pixel, the default sCMOS-like camera, the model's camera pixel and
KDE width. The reported density is the measured one (active emitters per µm² per frame).

Scored emitters: those with at least half of N in the frame (an emitter on for a sliver of the frame
is not a localization target); a prediction matched to a dimmer emitter counts neither way.
Matching: optimal assignment within ``--tolerance-nm`` (half a camera pixel by default;
``factory.localize``). Columns per method: Jaccard, lateral RMSE, and RMSE / CRLB where the CRLB is
the lateral bound sqrt(crlb_x² + crlb_y²) of the matched emitters (root mean square), so 1 means the
bound is reached on the emitters found. ``calib1`` / ``calib2``: the fraction of per-axis errors of
the diffusion model within 1 and 2 of its predicted standard deviations (68 % and 95 % if calibrated).
``readout``: the true KDE of each frame through the same peak finder and threshold as ``restore``,
scored the same way: the floor that the HR grid and the readout alone set, without the model.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

LABELS_PER_UM2, K_OFF, FRAME_MS, PSF_NM, BACKGROUND = 100.0, 20.0, 10.0, 110.0, 20.0
SCORED_FRACTION = 0.5


def condition_config(photons: float, density: float, geometry, n_frames: int):
    """SmlmConfig with every value fixed for one condition (module docstring)."""
    from factory.smlm import SmlmConfig

    duty = density / LABELS_PER_UM2
    k_on = duty * K_OFF / (1 - duty)
    return SmlmConfig(downsample=geometry.upscale, n_frames=n_frames, kde_sigma_nm=geometry.kde_sigma_nm,
                      labels_per_um2=LABELS_PER_UM2, k_on_per_s=k_on, k_off_per_s=K_OFF, k_bleach_per_s=0.0,
                      frame_time_ms=FRAME_MS, brightness_photons=photons, brightness_log_sigma=0.0, psf_sigma_nm=PSF_NM,
                      background_photons=BACKGROUND)


def score_frame(pred_nm: np.ndarray, truth: dict, photons: float, tolerance_nm: float, acc: dict,
                uncertainty: np.ndarray | None = None) -> None:
    """Add one frame's TP / FP / FN, squared errors, bounds and calibration counts to ``acc``."""
    from factory import localize

    m = localize.match(pred_nm, truth["xy"], tolerance_nm)
    scored = truth["photons"] >= SCORED_FRACTION * photons  # (m,)
    hit = scored[m.true_index]  # pairs with a scored emitter
    ignored = int((~hit).sum())  # predictions matched to a dim emitter
    tp = int(hit.sum())
    acc["tp"] += tp
    acc["fp"] += len(pred_nm) - len(m.pred_index)
    acc["fn"] += int(scored.sum()) - tp
    acc["ignored"] += ignored
    t, p = m.true_index[hit], m.pred_index[hit]
    err = np.asarray(pred_nm)[p] - truth["xy"][t]  # (tp, 2)
    acc["sq"] += float((err**2).sum())
    acc["bound_sq"] += float((truth["crlb"][t] ** 2).sum())
    if uncertainty is not None:
        u = uncertainty[p]
        ok = np.isfinite(u) & (u > 0)
        z = np.abs(err[ok]) / u[ok, None]  # (k, 2) per-axis errors in predicted sds
        acc["calib_n"] += z.size
        acc["calib1"] += int((z <= 1).sum())
        acc["calib2"] += int((z <= 2).sum())


def summary(acc: dict) -> dict:
    """The challenge metrics (``factory.localize.Scores``) plus the bound and the calibration of the emitters found."""
    from factory import localize

    scores = localize.Scores(acc["tp"], acc["fp"], acc["fn"], acc["sq"])
    rmse = scores.rmse_lateral_nm
    bound = math.sqrt(acc["bound_sq"] / scores.tp) if scores.tp else math.nan
    out = {"tp": scores.tp, "fp": scores.fp, "fn": scores.fn, "jaccard": scores.jaccard, "rmse_nm": rmse,
           "crlb_nm": bound, "rmse_over_crlb": rmse / bound if scores.tp else math.nan}
    if acc.get("calib_n"):
        out["calib1"], out["calib2"] = acc["calib1"] / acc["calib_n"], acc["calib2"] / acc["calib_n"]
    return out


def new_acc() -> dict:
    return {k: 0 for k in ("tp", "fp", "fn", "ignored", "sq", "bound_sq", "calib_n", "calib1", "calib2")}


def evaluate(a: argparse.Namespace) -> list[dict]:
    import torch

    from factory import localize
    from factory.diffusion import checkpoint
    from factory.diffusion.kinds import ModelKind
    from factory.diffusion.restore import RestoreConfig, restore
    from factory.smlm import CameraModel, detect_fit, simulate_sample
    from factory.store import Store

    if a.threads:
        torch.set_num_threads(a.threads)
    ckpt = checkpoint.load(a.model, kind=ModelKind.sr3)
    g = ckpt.config.geometry
    store = Store.open(a.store)
    last = store.committed_shards()[-1]
    hr = store.read_shard("hr", last)[: a.hr]  # (n_hr, H, W) held-out densities
    if hr.shape[1] != hr.shape[2] or hr.shape[1] % g.upscale:
        raise SystemExit(f"the store's HR {hr.shape[1:]} does not suit the model's upscale {g.upscale}.")
    hr_pixel = store.spec.hr_pixel_nm
    tolerance = a.tolerance_nm or g.lr_pixel_nm / 2
    readout_threshold = RestoreConfig().threshold * localize.isolated_peak(g.kde_sigma_px)
    rows = []
    for density in a.densities:
        for photons in a.photons:
            cfg = condition_config(photons, density, g, a.frames)
            acc = {"diffusion": new_acc(), "mle": new_acc(), "readout": new_acc()}
            active, t0, t_model = [], time.time(), 0.0
            for j, density_map in enumerate(hr):
                rng = np.random.default_rng(np.random.SeedSequence(a.seed, spawn_key=(j, int(photons), int(1000 * density))))
                params = cfg.draw(rng)
                s = simulate_sample(density_map, hr_pixel, params, rng, sample_id=j)
                active.append(s.stats["active_per_um2"])
                cam = CameraModel.from_params(params)
                em = s.emitters
                frame_col = em.column("frame").to_numpy()
                xy = np.stack([em.column("x_nm").to_numpy(), em.column("y_nm").to_numpy()], axis=1)
                crlb = np.hypot(em.column("crlb_x_nm").to_numpy(), em.column("crlb_y_nm").to_numpy())
                ph = em.column("photons").to_numpy()
                truth = [{"xy": xy[frame_col == f], "crlb": crlb[frame_col == f], "photons": ph[frame_col == f]}
                         for f in range(a.frames)]
                t1 = time.time()
                for r in restore(ckpt, cam.electrons(s.frames), RestoreConfig(samples=a.samples, seed=a.seed,
                                                                                batch_size=a.batch_size), qe=cam.qe):
                    score_frame(r.xy_nm, truth[r.frame], photons, tolerance, acc["diffusion"], r.uncertainty_nm)
                t_model += time.time() - t1
                for f, loc in enumerate(detect_fit(s.frames, PSF_NM, g.lr_pixel_nm, cam)):
                    score_frame(loc.xy_nm, truth[f], photons, tolerance, acc["mle"])
                for f, kde in enumerate(s.kde):  # the readout alone: the true KDE through restore's peak finder
                    xy_px, _ = localize.find_peaks(kde, readout_threshold)
                    score_frame(xy_px * g.hr_pixel_nm, truth[f], photons, tolerance, acc["readout"])
            row = {"photons": photons, "density_target": density, "active_per_um2": float(np.mean(active)),
                   "frames": len(hr) * a.frames, "samples": a.samples, "model_s_per_frame": t_model / (len(hr) * a.frames),
                   "diffusion": summary(acc["diffusion"]), "mle": summary(acc["mle"]),
                   "readout": summary(acc["readout"])}
            rows.append(row)
            d, m = row["diffusion"], row["mle"]
            print(f"[{time.strftime('%H:%M:%S')}] N {photons:g}, {row['active_per_um2']:.2f}/um2: diffusion J "
                  f"{d['jaccard']:.2f} RMSE {d['rmse_nm']:.1f} nm ({d['rmse_over_crlb']:.2f} CRLB); MLE J "
                  f"{m['jaccard']:.2f} RMSE {m['rmse_nm']:.1f} nm ({m['rmse_over_crlb']:.2f} CRLB); "
                  f"{time.time() - t0:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| photons | active /µm² | CRLB nm | diffusion RMSE nm (/CRLB) | diffusion Jaccard | MLE RMSE nm (/CRLB) "
             "| MLE Jaccard | within 1 / 2 sd | true-KDE readout RMSE nm / Jaccard |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, m, t = r["diffusion"], r["mle"], r.get("readout")
        calib = f"{d['calib1']:.2f} / {d['calib2']:.2f}" if "calib1" in d else "-"
        readout = f"{t['rmse_nm']:.1f} / {t['jaccard']:.2f}" if t else "-"
        lines.append(f"| {r['photons']:g} | {r['active_per_um2']:.2f} | {d['crlb_nm']:.1f} | {d['rmse_nm']:.1f} "
                     f"({d['rmse_over_crlb']:.2f}) | {d['jaccard']:.2f} | {m['rmse_nm']:.1f} ({m['rmse_over_crlb']:.2f}) "
                     f"| {m['jaccard']:.2f} | {calib} | {readout} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smlm", help="conditional model: 'smlm' (shipped) or a .safetensors path")
    ap.add_argument("--store", required=True, help="smlm store whose last shard's HR densities are held out")
    ap.add_argument("--out", required=True, help="folder for eval.json and table.md")
    ap.add_argument("--photons", nargs="+", type=float, default=[200, 1000, 5000, 10000])
    ap.add_argument("--densities", nargs="+", type=float, default=[0.3, 1.0, 3.0], help="target active emitters per µm²")
    ap.add_argument("--hr", type=int, default=1, help="held-out HR densities per condition")
    ap.add_argument("--frames", type=int, default=16, help="frames per HR density")
    ap.add_argument("--samples", type=int, default=4, help="posterior samples K per frame")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tolerance-nm", type=float, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    rows = evaluate(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({"settings": vars(a), "rows": rows}, indent=1))
    (out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
