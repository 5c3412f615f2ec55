"""Samplers for the discrete-time DDPM: small pure functions over a denoiser, one signature, one table.

Every sampler is ``sample_x(denoiser, x, ts, alphas_cumprod, noise=None, *, eta=0.0,
extra_args=None) -> x0`` (k-diffusion style): ``x`` is x_T ~ N(0, I), ``ts`` the
decreasing model timesteps to visit (``schedule.timesteps``), ``alphas_cumprod`` the
(T,) float64 abar table, ``noise()`` a fresh N(0, I) draw shaped like ``x`` (ancestral
samplers only), ``eta`` the DDIM noise scale (0 for the others), and ``extra_args``
what the denoiser needs besides (x_t, t): the conditioning of a conditional model,
``{"cond": (B, 1, H, W)}``, passed through untouched as k-diffusion's ``extra_args``.
:data:`SAMPLERS` maps each :class:`~factory.diffusion.sampler_config.SamplerKind` to
its function; :func:`run_sampler` is the one dispatch.

A *denoiser* maps ``(x_t (B, 1, H, W), t, **extra_args) -> x0_hat (B, 1, H, W)``;
:class:`EpsDenoiser` turns an eps-predicting network into one (time input, autocast,
x0 clipping), so the samplers never see the network. Step i goes from ts[i] to
ts[i + 1]; the last step goes to the clean image (abar = 1), so a K-step sampler makes
K model calls.

Notation: a_t = abar_t, alpha_t = sqrt(a_t), sigma_t = sqrt(1 - a_t) (Lu et al.),
lambda_t = log(alpha_t / sigma_t) the half log-SNR. Scalars are float64 Python
floats; the state stays in the caller's dtype.

Randomness: :func:`per_sample_noise` builds ``noise`` from per-sample CPU generators,
so sample i sees the same noise alone or in any batch.
"""
from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch

from factory.device import autocast
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind

if TYPE_CHECKING:
    from factory.diffusion.checkpoint import X0Prior

Denoiser = Callable[..., torch.Tensor]  # (x_t (B,1,H,W), t, **extra_args) -> x0_hat (B,1,H,W)
NoiseFn = Callable[[], torch.Tensor]  # fresh N(0, I) shaped like the state


class NetInput(str, enum.Enum):
    """What the network is told about the noise level of x_t."""

    timestep = "timestep"  # the integer timestep t as a float (Ho et al. 2020; the unconditional DDPM)
    noise_level = "noise_level"  # sqrt(abar_t), continuous (WaveGrad, Chen et al. 2020; SR3): any schedule at inference


class EpsDenoiser:
    """x0_hat(x_t, t) from an eps network: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (Ho et al. 2020, eq. 15).

    ``net(x_t, level (B,), **extra_args) -> eps`` where ``level`` is t or sqrt(a_t)
    (``net_input``); a conditional network takes ``cond`` among ``extra_args``.
    ``clip_x0`` clamps x0_hat to ``x0_range`` (the data range; improved-diffusion
    ``clip_denoised``; ``None`` as an end leaves that side open); DDIM then re-derives
    eps from the clipped x0. ``prior`` (``X0Prior``: ``mean``, ``below_abar``) replaces
    x0_hat by the constant ``mean`` wherever a_t < ``below_abar``, the near-zero-SNR
    steps where the eps network's x0 is worse than the data mean; the network is not
    called there. ``bf16`` runs the network under bf16 autocast; its output is cast
    back to the state dtype. ``on_call`` is invoked after every denoiser call.
    """

    def __init__(self, net: Callable[..., torch.Tensor], alphas_cumprod: torch.Tensor,
                 clip_x0: bool = True, bf16: bool = False, channels_last: bool = False,
                 on_call: Callable[[], None] | None = None, prior: "X0Prior | None" = None,
                 net_input: NetInput = NetInput.timestep, x0_range: tuple[float | None, float | None] = (-1.0, 1.0)):
        self.net, self.alphas_cumprod = net, alphas_cumprod
        self.clip_x0, self.bf16, self.channels_last, self.on_call = clip_x0, bf16, channels_last, on_call
        self.prior, self.net_input, self.x0_range = prior, NetInput(net_input), x0_range

    def __call__(self, x: torch.Tensor, t: int, **extra_args: Any) -> torch.Tensor:
        a = float(self.alphas_cumprod[int(t)])
        if self.prior is not None and a < self.prior.below_abar:
            if self.on_call is not None:
                self.on_call()
            return torch.full_like(x, self.prior.mean)
        level = float(t) if self.net_input is NetInput.timestep else math.sqrt(a)
        t_batch = torch.full((x.shape[0],), level, device=x.device)  # (B,)
        if self.channels_last:
            x_in = x.contiguous(memory_format=torch.channels_last)
            extra_args = {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.dim() == 4 else v
                          for k, v in extra_args.items()}
        else:
            x_in = x
        with autocast(x.device, self.bf16):
            eps = self.net(x_in, t_batch, **extra_args)  # (B, 1, H, W)
        eps = eps.to(x.dtype).contiguous()
        if self.on_call is not None:
            self.on_call()
        x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)  # (B, 1, H, W)
        return x0.clamp(*self.x0_range) if self.clip_x0 else x0


def per_sample_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...],
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> NoiseFn:
    """N(0, I) of shape (B, *shape), row i drawn on CPU from ``generators[i]`` alone, then moved to ``device``."""

    def draw() -> torch.Tensor:
        rows = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(rows).to(device=device, dtype=dtype)  # (B, *shape)

    return draw


def _no_eta(name: str, eta: float) -> None:
    if eta != 0.0:
        raise ValueError(f"the {name} sampler takes no eta, got {eta}")


def _abar_pair(alphas_cumprod: torch.Tensor, ts: torch.Tensor, i: int) -> tuple[float, float]:
    """(a_t, a_s) for step i: from ts[i] to ts[i + 1], or to the clean image (a_s = 1) at the end."""
    a_t = float(alphas_cumprod[int(ts[i])])
    a_s = float(alphas_cumprod[int(ts[i + 1])]) if i + 1 < len(ts) else 1.0
    return a_t, a_s


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, alphas_cumprod: torch.Tensor,
                noise: NoiseFn | None = None, *, eta: float = 0.0, extra_args: dict | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over ``ts``, fixed large variance.

    With ``ts`` = T-1..0 this is the trained chain; a shorter ``ts`` is the
    respaced chain of improved-diffusion (Nichol & Dhariwal 2021, sec. 4) with
    beta'_t = 1 - a_t / a_s. Each step samples x_s from N(mu_tilde, beta'_t I), where

        mu_tilde = sqrt(a_s) beta'_t / (1 - a_t) x0_hat + sqrt(1 - beta'_t) (1 - a_s) / (1 - a_t) x_t   (Ho eq. 7)

    and the variance is beta'_t (``FIXED_LARGE``, Ho sec. 3.2: sigma_t^2 = beta_t)
    instead of the posterior beta_tilde = (1 - a_s) / (1 - a_t) beta'_t. The last
    step to the clean image adds no noise (improved-diffusion masks it), so it
    returns x0_hat. Needs ``noise``; takes no ``eta``.
    """
    _no_eta("ddpm", eta)
    if noise is None:
        raise ValueError("DDPM sampling needs a noise function")
    extra_args = extra_args or {}
    for i, t in enumerate(ts.tolist()):
        a_t, a_s = _abar_pair(alphas_cumprod, ts, i)
        x0 = denoiser(x, t, **extra_args)  # (B, 1, H, W)
        beta = 1.0 - a_t / a_s
        x = (math.sqrt(a_s) * beta / (1.0 - a_t)) * x0 + (math.sqrt(1.0 - beta) * (1.0 - a_s) / (1.0 - a_t)) * x
        if i + 1 < len(ts):
            x = x + math.sqrt(beta) * noise()
    return x


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, alphas_cumprod: torch.Tensor,
                noise: NoiseFn | None = None, *, eta: float = 0.0, extra_args: dict | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over the strided ``ts``:

        x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s)           (eq. 16)

    with eps_hat = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t) re-derived from the
    (possibly clipped) x0_hat. eta = 0 is deterministic; eta = 1 gives the DDPM
    posterior variance beta_tilde; eta in [0, 1] (above 1, sigma^2 > 1 - a_s). ``noise``
    is required when eta > 0.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    if eta > 0 and noise is None:
        raise ValueError("DDIM with eta > 0 needs a noise function")
    extra_args = extra_args or {}
    for i, t in enumerate(ts.tolist()):
        a_t, a_s = _abar_pair(alphas_cumprod, ts, i)
        x0 = denoiser(x, t, **extra_args)  # (B, 1, H, W)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)  # (B, 1, H, W)
        sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise()
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, alphas_cumprod: torch.Tensor,
                    noise: NoiseFn | None = None, *, eta: float = 0.0, extra_args: dict | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), multistep in lambda.

    With h_i = lambda_s - lambda_t and r_i = h_{i-1} / h_i:

        D_i = (1 + 1 / (2 r_i)) x0_hat(t_i) - 1 / (2 r_i) x0_hat(t_{i-1})     (D_1 = x0_hat(t_0))
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h_i) - 1) D_i

    The last step lands on the clean image (sigma_s = 0, h = inf), where the update
    reduces to x_0 = x0_hat (first order, as k-diffusion and diffusers'
    ``lower_order_final`` do). Deterministic (``noise`` is not used; no ``eta``);
    meant for 10-25 steps.
    """
    _no_eta("dpmpp", eta)
    extra_args = extra_args or {}
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts.tolist()):
        a_t, a_s = _abar_pair(alphas_cumprod, ts, i)
        x0 = denoiser(x, t, **extra_args)  # (B, 1, H, W)
        if i + 1 == len(ts):
            return x0
        lam_t = 0.5 * math.log(a_t / (1.0 - a_t))
        lam_s = 0.5 * math.log(a_s / (1.0 - a_s))
        h = lam_s - lam_t
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
        x = (math.sqrt(1.0 - a_s) / math.sqrt(1.0 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


class Sampler(Protocol):
    """The one sampler signature (see the module docstring)."""

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, alphas_cumprod: torch.Tensor,
                 noise: NoiseFn | None = None, *, eta: float = 0.0, extra_args: dict | None = None) -> torch.Tensor: ...


SAMPLERS: dict[SamplerKind, Sampler] = {
    SamplerKind.ddpm: sample_ddpm,
    SamplerKind.ddim: sample_ddim,
    SamplerKind.dpmpp: sample_dpmpp_2m,
}


def run_sampler(cfg: SamplerConfig, denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor,
                alphas_cumprod: torch.Tensor, noise: NoiseFn | None, extra_args: dict | None = None) -> torch.Tensor:
    """Run the sampler ``cfg.kind`` from x_T = ``x`` over ``ts``: the one dispatch, -> x0 (B, 1, H, W)."""
    return SAMPLERS[cfg.kind](denoiser, x, ts, alphas_cumprod, noise, eta=cfg.eta, extra_args=extra_args)
