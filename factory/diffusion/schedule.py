"""Noise schedules and timestep spacings for the discrete-time DDPM.

Conventions (Ho et al. 2020, Nichol & Dhariwal 2021 "improved-diffusion"):

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   t = 0 .. T-1
    abar_t = prod_{s<=t} (1 - beta_s)

The cosine schedule is eq. (17) of Nichol & Dhariwal with s = 0.008 and betas
clipped at 0.999. Everything is kept in float64; callers cast at the edge.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from factory.diffusion.sampler_config import Spacing  # noqa: F401  (re-exported: defined torch-free there)
from factory.errors import FactoryError

MAX_TIMESTEPS = 100_000


class ScheduleKind(str, enum.Enum):
    cosine = "cosine"  # Nichol & Dhariwal 2021, eq. 17
    linear = "linear"  # betas linear in t, given at T = 1000 scale and rescaled by 1000/T (improved-diffusion)
    linear_exact = "linear_exact"  # betas = linspace(beta_start, beta_end, T) as given (SR3, WaveGrad)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: ScheduleKind = ScheduleKind.cosine
    num_timesteps: int = 2000
    beta_start: float = 1e-4  # linear schedules only (``linear``: at T = 1000 scale)
    beta_end: float = 0.02  # linear schedules only (``linear``: at T = 1000 scale)

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "num_timesteps": self.num_timesteps,
                "beta_start": self.beta_start, "beta_end": self.beta_end}

    def check(self) -> None:
        """FactoryError unless T is a sane count (1..100000) and linear betas lie in (0, 1)."""
        if isinstance(self.num_timesteps, bool) or not isinstance(self.num_timesteps, int) or not 1 <= self.num_timesteps <= MAX_TIMESTEPS:
            raise FactoryError(f"the schedule's num_timesteps must be an integer in 1..{MAX_TIMESTEPS}, got {self.num_timesteps}.")
        if self.kind is not ScheduleKind.cosine:
            scale = 1000.0 / self.num_timesteps if self.kind is ScheduleKind.linear else 1.0
            lo, hi = scale * self.beta_start, scale * self.beta_end
            if not (0.0 < lo < 1.0 and 0.0 < hi < 1.0):
                raise FactoryError(f"the schedule's betas must lie in (0, 1), got {lo:g}..{hi:g}.")

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        return cls(ScheduleKind(d["kind"]), int(d["num_timesteps"]),
                   float(d["beta_start"]), float(d["beta_end"]))


def betas_for(config: ScheduleConfig) -> torch.Tensor:
    """Return beta_t for t = 0..T-1, float64, shape (T,)."""
    T = config.num_timesteps
    if config.kind is ScheduleKind.linear:
        scale = 1000.0 / T  # improved-diffusion: keeps the schedule shape for any T
        return torch.linspace(scale * config.beta_start, scale * config.beta_end, T, dtype=torch.float64)
    if config.kind is ScheduleKind.linear_exact:
        return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)

    def abar(u: float) -> float:  # u in [0, 1]
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1.0 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """abar_t for t = 0..T-1, float64, shape (T,)."""
    return torch.cumprod(1.0 - betas_for(config), dim=0)


def timesteps(num_timesteps: int, steps: int, spacing: Spacing = Spacing.trailing) -> torch.Tensor:
    """Decreasing model timesteps for a ``steps``-step sampler, int64, shape (steps,).

    ``trailing``: T-1, T-1-T/steps, ...  (Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed", table 2); ``linspace``: rounded
    linspace(T-1, 0); ``leading``: the original DDIM choice, which starts at
    T - T/steps and is a bad idea at few steps.
    """
    T = num_timesteps
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}")
    if spacing is Spacing.trailing:
        ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1
    elif spacing is Spacing.linspace:
        ts = torch.round(torch.linspace(T - 1, 0, steps, dtype=torch.float64))
    else:
        ts = torch.arange(0, steps, dtype=torch.float64).flip(0) * (T // steps)
    return ts.to(torch.int64)
