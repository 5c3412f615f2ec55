"""Conditional-model training: resumable bit for bit, garbage refused, the inference schedule chosen by the search,
and ``factory train-smlm`` refusing what it cannot do in one sentence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from factory.cli import app
from factory.diffusion import checkpoint
from factory.diffusion.kinds import ModelKind
from factory.diffusion.schedule import alphas_cumprod
from factory.diffusion.schedule_search import SearchConfig, linear_ending_at
from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry, SmlmPair
from factory.diffusion.train_smlm import SmlmTrainConfig, train_smlm
from factory.diffusion.training import state_path
from factory.errors import FactoryError

from conftest import SPOTS_GEOMETRY

runner = CliRunner()
GEOMETRY = SmlmGeometry(**SPOTS_GEOMETRY)


def _cfg(out, **kw) -> SmlmTrainConfig:
    from factory.diffusion.sampler_config import SamplerKind

    base = dict(out=str(out), preset="tiny", steps=6, batch_size=2, checkpoint_every=3, seed=2,
                search=SearchConfig(steps=(4,), final_gammas=(1e-2,), samplers=(SamplerKind.ddpm,), frames=2))
    return SmlmTrainConfig(**{**base, **kw})


def test_resume_is_bit_identical(tmp_path):
    train, holdout = GaussianSpots(16, 0, GEOMETRY), GaussianSpots(2, 1, GEOMETRY)
    a = checkpoint.load(train_smlm(_cfg(tmp_path / "a.safetensors"), train, holdout), kind=ModelKind.sr3)
    train_smlm(_cfg(tmp_path / "b.safetensors", steps=3), train, holdout)
    b = checkpoint.load(train_smlm(_cfg(tmp_path / "b.safetensors"), train, holdout), kind=ModelKind.sr3)  # resumes at 3
    assert a.card["steps"] == b.card["steps"] == 6 and b.card["final"] is True
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.config == b.config  # same data, same search: same chosen schedule
    assert state_path(tmp_path / "b.safetensors").exists()


class _Broken:
    """GaussianSpots with one pair made non-finite."""

    def __init__(self, bad: int, where: str):
        self.inner, self.bad, self.where = GaussianSpots(16, 0, GEOMETRY), bad, where
        self.geometry = self.inner.geometry

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        p = self.inner[i]
        if i != self.bad:
            return p
        frame, kde = p.frame_e.copy(), p.kde.copy()
        (frame if self.where == "frame" else kde)[0, 0] = np.nan
        return SmlmPair(frame, kde, p.emitters_nm)


@pytest.mark.parametrize("bad, where", [(0, "frame"), (5, "kde")])
def test_non_finite_training_data_is_refused_before_it_is_trained_on(tmp_path, bad, where):
    out = tmp_path / "m.safetensors"
    with pytest.raises(FactoryError, match=f"training pair {bad} holds NaN"):
        train_smlm(_cfg(out, steps=40, checkpoint_every=40), _Broken(bad, where), GaussianSpots(2, 1, GEOMETRY))
    assert not out.exists() and not state_path(out).exists()


def test_training_stops_at_the_first_non_finite_loss(tmp_path):
    """An electrons_scale of 1e-38 makes the condition overflow float32: the loss is not finite at step 1."""
    out = tmp_path / "m.safetensors"
    with pytest.raises(FactoryError, match=r"training stopped at step 1: the loss is (nan|inf)") as err:
        train_smlm(_cfg(out, electrons_scale=1e-38), GaussianSpots(16, 0, GEOMETRY), GaussianSpots(2, 1, GEOMETRY))
    assert "rerun" not in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_the_checkpoint_carries_the_schedule_the_search_chose(tiny_sr3):
    ck = checkpoint.load(tiny_sr3, kind=ModelKind.sr3)
    rows = ck.card["schedule_search"]
    assert len(rows) == 2 * 2 * 2  # steps (4, 8) x final gammas (1e-2, 1e-3) x samplers (ddpm, dpmpp)
    eff = lambda r: r["efficiency"] if math.isfinite(r["efficiency"]) else -math.inf  # noqa: E731
    best = min(rows, key=lambda r: (-eff(r), r["mse"], r["steps"]))
    assert ck.config.inference.num_timesteps == best["steps"] == ck.config.sampler.steps
    assert ck.config.sampler.kind.value == best["sampler"]
    assert float(alphas_cumprod(ck.config.inference)[-1]) == pytest.approx(best["final_gamma"], rel=1e-6)
    assert ck.card["inference_schedule"] == "searched on held-out data"


@pytest.mark.parametrize("steps, gamma", [(10, 1e-2), (25, 1e-3), (100, 1e-4), (50, 4.4e-5)])
def test_candidate_schedules_end_at_their_target_noise_level(steps, gamma):
    schedule = linear_ending_at(steps, gamma)
    betas = np.linspace(1e-4, schedule.beta_end, steps)
    assert np.prod(1 - betas) == pytest.approx(gamma, rel=1e-9)
    assert float(alphas_cumprod(schedule)[-1]) == pytest.approx(gamma, rel=1e-9)
    assert linear_ending_at(2, 1e-6) is None  # two steps cannot remove that much signal with betas < 0.999


def test_gaussian_spots_are_deterministic_and_their_kde_counts_emitters():
    a, b = GaussianSpots(4, 3, GEOMETRY), GaussianSpots(4, 3, GEOMETRY)
    for i in range(4):
        pa, pb = a[i], b[i]
        assert np.array_equal(pa.frame_e, pb.frame_e) and np.array_equal(pa.kde, pb.kde)
        assert pa.kde.shape == (32, 32) and pa.frame_e.shape == (8, 8)
        assert pa.kde.sum() == pytest.approx(len(pa.emitters_nm), rel=1e-3)  # one normalized Gaussian per emitter
    assert not np.array_equal(a[0].frame_e, GaussianSpots(4, 4, GEOMETRY)[0].frame_e)


@pytest.mark.parametrize("args, words", [
    (["--store", "s.zarr"], "no such store"),
    (["--store", "s.zarr", "--max-minutes", "-1"], "--max-minutes must be a positive number"),
    (["--store", "s.zarr", "--steps", "0"], "--steps must be at least 1"),
    (["--store", "s.zarr", "--seed", "-1"], "--seed must be an integer >= 0"),
    (["--store", "s.zarr", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_cli_train_smlm_refuses_in_one_sentence(tmp_path, args, words):
    r = runner.invoke(app, ["train-smlm", "--out", str(tmp_path / "m.safetensors"), *args])
    assert r.exit_code == 2, r.output
    assert words in r.output and r.output.strip().startswith("error:") and "Traceback" not in r.output
    assert not (tmp_path / "m.safetensors").exists()
