"""Samplers: DDIM against diffusers step for step, DDPM against Ho eq. 11, all three on
Gaussian data with the analytic optimal denoiser, per-sample noise invariance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factory.diffusion import checkpoint
from factory.diffusion.samplers import EpsDenoiser, sample_ddim, sample_ddpm, sample_dpmpp_2m
from factory.diffusion.sampling import SamplerConfig, SamplerKind, sample_images
from factory.diffusion.schedule import ScheduleConfig, Spacing, alphas_cumprod, betas_for, timesteps




def fixed_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for an eps network: smooth, nonlinear, depends on t."""
    return 0.8 * torch.sin(x * (1.0 + t.to(x.dtype)[:, None, None, None] / 50.0)) + 0.1 * x.roll(1, dims=-1)


class Recorder:
    """Wraps a denoiser and keeps the state it is called with (= the sampler's state before each step)."""

    def __init__(self, denoiser):
        self.denoiser, self.states = denoiser, []

    def __call__(self, x, t):
        self.states.append(x.clone())
        return self.denoiser(x, t)


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("net_kind", ["function", "tiny_unet"])
def test_ddim_matches_diffusers_step_for_step(eta, net_kind, tiny_model):
    from diffusers import DDIMScheduler

    T, steps = 50, 10
    betas = betas_for(ScheduleConfig(num_timesteps=T))  # (T,) float64
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=T))
    if net_kind == "function":
        net = fixed_eps
    else:
        ckpt = checkpoint.load(tiny_model)
        assert ckpt.config.schedule.num_timesteps == T
        def net(x, t):  # the float32 UNet inside a float64 sampler state: both sides get identical eps
            return ckpt.model(x.float(), t.float()).double()
    sched = DDIMScheduler(num_train_timesteps=T, trained_betas=betas.numpy(), clip_sample=False, set_alpha_to_one=True,
                          timestep_spacing="trailing", prediction_type="epsilon")
    assert torch.allclose(sched.alphas_cumprod.double(), abar, atol=1e-6)  # same betas (diffusers keeps float32)
    sched.alphas_cumprod = abar.clone()  # compare the algorithms, not float32 vs float64 tables
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(steps)
    ts = timesteps(T, steps, Spacing.trailing)
    assert sched.timesteps.tolist() == ts.tolist()

    dtype = torch.float64  # so that the comparison measures the algorithm, not float32 rounding
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(3, 1, 16, 16, generator=g, dtype=dtype)
    z = [torch.randn(3, 1, 16, 16, generator=g, dtype=dtype) for _ in range(steps)]

    ref, x = [x_T], x_T
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):
            eps = net(x, torch.full((3,), float(t), dtype=dtype))
            x = sched.step(eps, int(t), x, eta=eta, variance_noise=z[k]).prev_sample
            ref.append(x)

    draws = iter(z)
    rec = Recorder(EpsDenoiser(net, abar, clip_x0=False))
    ours = sample_ddim(rec, x_T, ts, abar, eta=eta, noise=lambda: next(draws))
    ours_states = rec.states + [ours]
    assert len(ours_states) == len(ref) == steps + 1
    for k, (a, b) in enumerate(zip(ours_states, ref)):
        assert (a - b).abs().max().item() < 1e-5, f"step {k}"
    assert (ours - x_T).abs().max() > 0.1  # the comparison is not vacuous


def test_ddpm_step_is_ho_eq11():
    """One ancestral step equals mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sqrt(beta_t) z."""
    T = 50
    betas = betas_for(ScheduleConfig(num_timesteps=T))
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=T))
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    for t in (T - 1, 30, 1):
        rec = Recorder(EpsDenoiser(fixed_eps, abar, clip_x0=False))
        sample_ddpm(rec, x_t, torch.tensor([t, t - 1]), abar, noise=lambda: z)
        eps = fixed_eps(x_t, torch.full((2,), float(t), dtype=torch.float64))
        b = float(betas[t])
        expected = (x_t - b / math.sqrt(1 - float(abar[t])) * eps) / math.sqrt(1 - b) + math.sqrt(b) * z
        assert torch.allclose(rec.states[1], expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind, steps, std_tol", [("ddpm", 2000, 0.03), ("ddim", 50, 0.04), ("dpmpp", 20, 0.03)])
def test_gaussian_data_with_optimal_denoiser(kind, steps, std_tol):
    """Data ~ N(mu, s^2) per pixel has the analytic posterior mean
    E[x0 | x_t] = mu + sqrt(a) s^2 / (a s^2 + 1 - a) (x_t - sqrt(a) mu); every sampler must
    then produce samples with mean ~ mu and std ~ s."""
    sched = ScheduleConfig(num_timesteps=2000)
    abar = alphas_cumprod(sched)
    mu, s = 0.2, 0.5

    def denoiser(x, t):
        a = float(abar[t])
        return mu + math.sqrt(a) * s * s / (a * s * s + 1 - a) * (x - math.sqrt(a) * mu)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 1, 32, 32, generator=g, dtype=torch.float64)
    noise = lambda: torch.randn(x.shape, generator=g, dtype=torch.float64)  # noqa: E731
    ts = timesteps(sched.num_timesteps, steps, Spacing.trailing)
    if kind == "ddpm":
        out = sample_ddpm(denoiser, x, ts, abar, noise)
    elif kind == "ddim":
        out = sample_ddim(denoiser, x, ts, abar)
    else:
        out = sample_dpmpp_2m(denoiser, x, ts, abar)
    assert abs(out.mean().item() - mu) < 0.02
    assert abs(out.std().item() / s - 1) < std_tol, out.std().item()


def test_x0_clipping():
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=50))
    x = torch.full((1, 1, 4, 4), 5.0)
    big = EpsDenoiser(lambda x, t: -x, abar, clip_x0=False)(x, 10)
    clipped = EpsDenoiser(lambda x, t: -x, abar, clip_x0=True)(x, 10)
    assert big.max() > 1.5 and clipped.max() == 1.0 and clipped.min() >= -1.0


def test_x0_prior_replaces_the_network_at_near_zero_snr():
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=50))
    calls = []
    net = lambda x, t: calls.append(int(t[0])) or -x  # noqa: E731
    den = EpsDenoiser(net, abar, prior=checkpoint.X0Prior(mean=-0.75, below_abar=float(abar[40])))
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(den(x, 49), torch.full_like(x, -0.75)) and calls == []  # a_49 < a_40: the mean, no network call
    assert torch.equal(den(x, 40), EpsDenoiser(net, abar)(x, 40)) and calls == [40, 40]  # from a_40 on: the network


@pytest.mark.parametrize("kind, eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmpp", 0.0)])
def test_per_sample_noise_is_batch_invariant(tiny_model, kind, eta):
    ckpt = checkpoint.load(tiny_model)
    cfg = SamplerConfig(kind=SamplerKind(kind), steps=8, eta=eta)
    ids = [7, 3, 11, 0]
    batch = sample_images(ckpt, ids, run_seed=5, cfg=cfg)  # (4, 16, 16)
    alone = np.stack([sample_images(ckpt, [i], run_seed=5, cfg=cfg)[0] for i in ids])
    shuffled = sample_images(ckpt, ids[::-1], run_seed=5, cfg=cfg)[::-1]
    assert batch.shape == (4, 16, 16) and batch.dtype == np.float32
    assert np.abs(batch - alone).max() < 1e-5
    assert np.abs(batch - shuffled).max() < 1e-5
    assert np.array_equal(batch, sample_images(ckpt, ids, run_seed=5, cfg=cfg))  # same call -> same bits
    assert np.abs(batch - sample_images(ckpt, ids, run_seed=6, cfg=cfg)).max() > 0.01  # the seed matters
    assert np.abs(batch[0] - batch[1]).max() > 0.01  # samples differ from each other


@pytest.mark.parametrize("kind", list(SamplerKind))
def test_the_table_dispatch_equals_calling_the_sampler(kind):
    from factory.diffusion.samplers import SAMPLERS, run_sampler

    abar = alphas_cumprod(ScheduleConfig(num_timesteps=50))
    den = EpsDenoiser(fixed_eps, abar, clip_x0=False)
    ts = timesteps(50, 8)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eta = 0.7 if kind is SamplerKind.ddim else 0.0

    def noise_from(seed):
        g = torch.Generator().manual_seed(seed)
        return lambda: torch.randn(2, 1, 8, 8, generator=g)

    direct = SAMPLERS[kind](den, x, ts, abar, noise_from(1), eta=eta)
    via_table = run_sampler(SamplerConfig(kind=kind, steps=8, eta=eta), den, x, ts, abar, noise_from(1))
    assert torch.equal(direct, via_table)


def test_samplers_refuse_an_eta_they_cannot_use():
    abar = alphas_cumprod(ScheduleConfig(num_timesteps=50))
    den = EpsDenoiser(fixed_eps, abar)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        sample_ddim(den, x, timesteps(50, 4), abar, lambda: x, eta=2.0)
    with pytest.raises(ValueError, match="takes no eta"):
        sample_dpmpp_2m(den, x, timesteps(50, 4), abar, eta=0.5)
