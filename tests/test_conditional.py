"""The conditional (SR3-style) model: noise levels, the condition reaching the network through every
sampler, camera/KDE units, and checkpoints that say which kind of model they hold."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from factory.diffusion import checkpoint
from factory.diffusion.conditional import (NOISE_LEVEL_SCALE, TRAIN_SCHEDULE, ConditionalConfig, ConditionalUNet,
                                           draw_gammas, noise_level_table)
from factory.diffusion.kinds import ModelKind
from factory.diffusion.posterior import sample_kde
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind
from factory.diffusion.samplers import SAMPLERS, EpsDenoiser, NetInput, run_sampler
from factory.diffusion.schedule import ScheduleConfig, ScheduleKind, alphas_cumprod
from factory.diffusion.smlm_data import GaussianSpots, SmlmGeometry
from factory.diffusion.unet import PRESETS
from factory.errors import FactoryError
from factory.seeding import restore_generator

from conftest import SPOTS_GEOMETRY

GEOMETRY = SmlmGeometry(**SPOTS_GEOMETRY)
CFG = ConditionalConfig(PRESETS["tiny"], GEOMETRY, electrons_scale=50.0)


def test_published_schedule_stops_far_from_noise_and_the_training_range_reaches_it():
    short = alphas_cumprod(ScheduleConfig(ScheduleKind.linear_exact, 100, 1e-4, 1e-2))
    assert float(short[-1]) == pytest.approx(np.prod(1 - np.linspace(1e-4, 1e-2, 100)), rel=1e-12)
    assert float(short[-1]) == pytest.approx(0.6025, abs=1e-4)  # 78 % of the signal amplitude left at "t = T"
    train = alphas_cumprod(TRAIN_SCHEDULE)
    assert float(train[-1]) == pytest.approx(np.prod(1 - np.linspace(1e-6, 1e-2, 2000)), rel=1e-9)
    assert float(train[-1]) < 1e-4  # 4.39e-5: gamma ~ 0


def test_noise_levels_are_piecewise_uniform_over_the_whole_range():
    table = noise_level_table(TRAIN_SCHEDULE).numpy()  # (T + 1,) from 1 down to gamma_T
    T = len(table) - 1
    g = draw_gammas(torch.from_numpy(table), 400_000, torch.Generator().manual_seed(0)).numpy()
    assert table[-1] <= g.min() and g.max() <= 1.0
    t = np.searchsorted(-table, -g)  # interval t: table[t] <= g < table[t - 1]
    t = np.clip(t, 1, T)
    counts = np.bincount(t, minlength=T + 1)[1:]  # (T,)
    assert counts.min() > 0  # every one of the 2000 intervals is visited, the lowest-gamma one included
    assert stats.chisquare(counts).pvalue > 1e-3  # t ~ U{1..T}
    u = (g - table[t]) / (table[t - 1] - table[t])  # position inside its interval
    assert stats.kstest(u, "uniform").pvalue > 1e-3  # gamma ~ U(gamma_t, gamma_{t-1})
    for x in (1e-3, 0.1, 0.5):  # the CDF of the mixture of T uniforms, P(g < x) = mean_t clip((x - g_t) / (g_{t-1} - g_t), 0, 1)
        cdf = np.mean(np.clip((x - table[1:]) / (table[:-1] - table[1:]), 0, 1))
        assert abs(np.mean(g < x) - cdf) < 4 * math.sqrt(cdf * (1 - cdf) / len(g))


class PlantedIdentity(torch.nn.Module):
    """eps such that the x0 estimate equals the condition channel: eps = (y - sqrt(g) c) / sqrt(1 - g)."""

    def forward(self, y_t, noise_level, cond):
        a = noise_level.to(torch.float64)[:, None, None, None]
        return ((y_t.double() - a * cond.double()) / torch.sqrt(1 - a * a)).to(y_t.dtype)


def _frames(n: int = 3) -> torch.Tensor:
    spots = GaussianSpots(n, 7, GEOMETRY)
    return torch.from_numpy(np.stack([spots[i].frame_e for i in range(n)]))  # (n, 8, 8) photo-electrons


@pytest.mark.parametrize("kind", list(SamplerKind))
def test_a_planted_identity_net_reproduces_the_condition_through_every_sampler(kind):
    frames = _frames()
    expected = CFG.from_model(CFG.condition(frames))[:, 0].numpy()  # (3, 32, 32) the condition, in KDE units
    sampler = SamplerConfig(kind=kind, steps=10, eta=0.5 if kind is SamplerKind.ddim else 0.0)
    inference = ScheduleConfig(ScheduleKind.linear_exact, 10, 1e-4, 0.6)
    out = sample_kde(PlantedIdentity(), CFG, frames, [restore_generator(0, i, 0) for i in range(3)], sampler, inference)
    assert out.shape == (3, 32, 32)
    assert np.abs(out - expected).max() < 1e-4 * expected.max()
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * expected.max()  # the frames differ, so this is not vacuous


def test_a_zero_trained_net_ignores_the_condition():
    torch.manual_seed(0)
    fresh = ConditionalUNet(CFG.unet).eval()  # output layer zero-initialized: eps = 0 whatever the input
    frames = _frames(2)
    gens = lambda: [restore_generator(0, 0, k) for k in range(2)]  # noqa: E731  the same noise for both calls
    a = sample_kde(fresh, CFG, frames, gens())
    b = sample_kde(fresh, CFG, frames.flip(0) * 3 + 100, gens())
    assert np.array_equal(a, b)
    assert np.abs(a[0] - a[1]).max() > 0  # but it does follow its noise: two samples differ


def test_the_network_sees_the_condition_and_the_noise_level():
    torch.manual_seed(0)
    net = ConditionalUNet(CFG.unet).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
        y, c = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
        level = torch.tensor([0.3, 0.9])
        base = net(y, level, c)
        assert (net(y, level, c + 1) - base).abs().max() > 1e-3
        assert (net(y, level + 0.01, c) - base).abs().max() > 1e-3
        # the condition is input channel 1 of the UNet, behind y_t; the level enters as NOISE_LEVEL_SCALE * sqrt(gamma)
        assert torch.equal(base, net.unet(torch.cat([y, c], 1), NOISE_LEVEL_SCALE * level))
    with pytest.raises(ValueError, match="differ in shape"):
        net(y, level, c[..., :8])


def test_every_sampler_passes_extra_args_through():
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=20))
    seen = []

    def denoiser(x, t, **extra):
        seen.append(extra)
        return torch.zeros_like(x)

    x = torch.randn(1, 1, 4, 4)
    assert set(SAMPLERS) == set(SamplerKind)  # one table covers every kind
    for kind in SamplerKind:
        seen.clear()
        cfg = SamplerConfig(kind=kind, steps=5)
        run_sampler(cfg, denoiser, x, torch.arange(19, 0, -4), abar, lambda: torch.zeros_like(x), extra_args={"cond": "c"})
        assert seen == [{"cond": "c"}] * 5, kind


def test_noise_level_denoiser_tells_the_net_sqrt_abar():
    abar = alphas_cumprod(ScheduleConfig(ScheduleKind.linear_exact, 10, 1e-4, 0.5))
    got = []
    den = EpsDenoiser(lambda x, level, cond: got.append((float(level[0]), cond)) or torch.zeros_like(x), abar,
                      net_input=NetInput.noise_level, x0_range=(-1.0, None))
    x0 = den(torch.full((1, 1, 2, 2), 5.0), 4, cond="c")
    assert got == [(pytest.approx(math.sqrt(float(abar[4])), rel=1e-6), "c")]
    assert x0.min() > 1.0  # clamped below only: a KDE has no upper bound


def test_camera_and_kde_units():
    frames = torch.full((1, 8, 8), 100.0)  # 100 photo-electrons everywhere
    assert torch.allclose(CFG.condition(frames), torch.full((1, 1, 32, 32), 2.0))  # / electrons_scale 50, upsampled x4
    one = torch.from_numpy(GaussianSpots(1, 0, GEOMETRY, emitters=(1, 1))[0].kde)  # one emitter
    y = CFG.to_model(one)
    assert float(y.min()) == pytest.approx(-1.0, abs=1e-6) and 0.75 < float(y.max()) < 0.85  # peak 0.92 -> 2*0.92-1
    assert torch.allclose(CFG.from_model(y), one, atol=1e-6)


def test_conditional_checkpoint_round_trip_and_kind(tmp_path, tiny_model):
    torch.manual_seed(1)
    net = ConditionalUNet(CFG.unet)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, net, CFG, {"note": "test"})
    ck = checkpoint.load(path, kind=ModelKind.sr3)
    assert ck.config == CFG and ck.kind is ModelKind.sr3 and ck.card == {"note": "test"}
    y, level, c = torch.randn(1, 1, 16, 16), torch.tensor([0.5]), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(ck.model(y, level, c), net.eval()(y, level, c))
    with pytest.raises(FactoryError, match=r"is a conditional SMLM restoration model .*, but this needs an unconditional DDPM"):
        checkpoint.load(path)
    with pytest.raises(FactoryError, match="is an unconditional DDPM .*, but this needs a conditional"):
        checkpoint.load(tiny_model, kind=ModelKind.sr3)
