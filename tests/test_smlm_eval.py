"""jobs/smlm_eval.py: the scoring rule on a constructed frame, and that a condition's settings give its density."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import smlm_eval  # noqa: E402

from factory.diffusion.smlm_data import SmlmGeometry  # noqa: E402
from factory.smlm import simulate_sample  # noqa: E402


def test_score_frame_counts_by_hand():
    # truth: 3 bright emitters and 1 dim one (20 % of N: not a target); predictions: two near bright
    # emitters (errors (3, 4) and (0, -6) nm), one on the dim emitter (ignored), one far from all (FP)
    truth = {"xy": np.array([[100.0, 100.0], [500.0, 100.0], [900.0, 900.0], [300.0, 700.0]]),
             "crlb": np.array([10.0, 20.0, 30.0, 5.0]), "photons": np.array([1000.0, 900.0, 800.0, 200.0])}
    pred = np.array([[103.0, 104.0], [500.0, 94.0], [302.0, 701.0], [1500.0, 1500.0]])
    unc = np.array([5.0, 2.0, 1.0, 1.0])  # per-axis predicted sd of each prediction
    acc = smlm_eval.new_acc()
    smlm_eval.score_frame(pred, truth, 1000.0, 80.0, acc, unc)
    s = smlm_eval.summary(acc)
    assert (s["tp"], s["fp"], s["fn"], acc["ignored"]) == (2, 1, 1, 1)
    assert s["jaccard"] == pytest.approx(2 / 4)
    assert s["rmse_nm"] == pytest.approx(math.sqrt((9 + 16 + 36) / 2))
    assert s["crlb_nm"] == pytest.approx(math.sqrt((100 + 400) / 2))
    # per-axis |err| / sd: (3/5, 4/5) within 1; (0/2, 6/2 = 3) one within 1, none more within 2
    assert s["calib1"] == pytest.approx(3 / 4) and s["calib2"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("density", [0.3, 3.0])
def test_a_condition_gives_its_active_density_and_photons(density):
    g = SmlmGeometry(lr_pixel_nm=160.0, hr_pixel_nm=40.0, kde_sigma_nm=40.0, psf_sigma_nm=110.0)
    cfg = smlm_eval.condition_config(1000.0, density, g, n_frames=400)
    params = cfg.draw(np.random.default_rng(0))
    s = simulate_sample(np.ones((64, 64)), 40.0, params, np.random.default_rng(1))
    assert s.stats["active_per_um2"] == pytest.approx(density, rel=0.3)
    full = s.emitters.column("on_fraction").to_numpy() > 0.999
    assert np.allclose(s.emitters.column("photons").to_numpy()[full], 1000.0)  # no brightness spread


def test_table_shows_the_true_kde_readout_when_measured():
    part = {"tp": 3, "fp": 0, "fn": 1, "jaccard": 0.75, "rmse_nm": 12.0, "crlb_nm": 6.0, "rmse_over_crlb": 2.0}
    row = {"photons": 1000.0, "active_per_um2": 0.5, "diffusion": {**part, "calib1": 0.6, "calib2": 0.9}, "mle": part}
    old = smlm_eval.table([row]).splitlines()[-1]
    assert old.endswith("| 0.60 / 0.90 | - |")  # rows made before the readout column
    new = smlm_eval.table([{**row, "readout": {**part, "rmse_nm": 1.25, "jaccard": 1.0}}]).splitlines()[-1]
    assert new.endswith("| 0.60 / 0.90 | 1.2 / 1.00 |")
