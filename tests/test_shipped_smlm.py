"""The shipped conditional model (`--model smlm`): loads as its kind, fits the size limit, carries its searched
schedule, and finds a bright isolated emitter in a frame made by the SMLM stage's own image formation."""
import numpy as np

from factory.diffusion import checkpoint
from factory.diffusion.checkpoint import SHIPPED
from factory.diffusion.kinds import ModelKind
from factory.diffusion.restore import RestoreConfig, restore
from factory.smlm import expected_frames


def test_shipped_smlm_model_finds_an_isolated_emitter():
    assert SHIPPED["smlm"].stat().st_size < 20e6
    ckpt = checkpoint.load("smlm", kind=ModelKind.sr3)
    assert "schedule_search" in ckpt.card and ckpt.card["steps"] >= 1000
    g = ckpt.config.geometry
    x, y = 7.3 * g.lr_pixel_nm, 8.6 * g.lr_pixel_nm
    mu = expected_frames(np.array([x]), np.array([y]), np.array([3000.0]), np.array([0]), 1, (16, 16), g.lr_pixel_nm,
                         g.psf_sigma_nm, 20.0)  # photons
    frame = np.random.default_rng(0).poisson(0.8 * mu).astype(np.float32)  # photo-electrons, QE 0.8
    (r,) = list(restore(ckpt, frame, RestoreConfig(samples=2, seed=0), qe=0.8))
    d = np.hypot(r.xy_nm[:, 0] - x, r.xy_nm[:, 1] - y)
    assert d.min() < g.lr_pixel_nm / 2  # found, within half a camera pixel
