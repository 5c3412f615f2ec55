"""The conditional (SR3-style) model: the KDE of an SMLM frame's emitters, sampled given the frame.

After SR3 (Saharia et al. 2021, "Image super-resolution via iterative refinement")
and WaveGrad (Chen et al. 2020): the network eps_theta(y_t, sqrt(gamma), x) sees
y_t (the noised target) and the condition x (the LR frame, camera-normalized and
upsampled to the HR grid by bicubic interpolation) stacked along channels, and the
continuous noise level sqrt(gamma), gamma = abar, instead of an integer timestep; so
the inference schedule and its step count are free after training.

Noise levels. The published 100-step linear schedule, betas 1e-4..1e-2, ends at
gamma_T = prod(1 - beta_t) = 0.6025 (sqrt 0.776): y_T is still 78 % signal, far from the
N(0, I) a sampler starts from. Training here follows SR3's training range instead:
T = 2000, betas linear 1e-6..1e-2 (``ScheduleKind.linear_exact``), gamma_T = 4.39e-5
(sqrt 0.0066), i.e. it reaches gamma ~ 0. Training draws t ~ U{1..T}, then
gamma ~ U(gamma_{t-1}, gamma_t) with gamma_0 = 1 (piecewise uniform, SR3 sec. 2.4 /
WaveGrad sec. 3.3), and regresses eps (Ho et al. 2020 L_simple). The inference schedule is
chosen on held-out data (:mod:`factory.diffusion.schedule_search`).

Start state. Sampling starts at the schedule's last level gamma_N from
y_N ~ N(sqrt(gamma_N) m, (1 - gamma_N) I), m = ``y0_mean`` the mean training target (model
units, measured at training): the forward marginal q(y_N | y0) with y0 replaced by its
mean, which is N(0, I) when gamma_N ~ 0. Why: the eps network's x0 = (y - sqrt(1 - g) eps)
/ sqrt(g) multiplies eps errors by 1 / sqrt(g) (31 at g = 1e-3), so near pure noise its
estimate of sparse data's mean (background -1) is the first thing to go wrong (the DDPM's
:class:`~factory.diffusion.checkpoint.X0Prior` handles the same problem); measured on a tiny
model trained 1500 steps on Gaussian spots, 50 ancestral steps from gamma_N = 1e-3 and N(0, I)
gave efficiency -0.015 (every frame filled with false peaks), from gamma_N = 0.05 and the
noised mean 0.51 (16 held-out frames, 43 emitters). The search picks gamma_N among candidates up to 0.3.

Units. Condition: photo-electrons above offset, (ADU - offset) * gain_e_per_adu / em_gain,
divided by ``electrons_scale`` (stored in the model), so a real frame whose camera
parameters are known is scaled exactly as the training frames were. Target: the KDE
(sum over emitters of a normalized Gaussian of ``kde_sigma_nm``, per HR pixel) times
2 pi sigma_px^2, so that an isolated emitter peaks at 1 (0.92 after pixel integration at
sigma = 1 px) and background is 0; the network works on 2 y - 1 (background -1, like the
DDPM's [-1, 1] data), and x0 predictions are clamped below at -1 (a KDE is never negative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from factory.diffusion.kinds import ModelKind
from factory.diffusion.sampler_config import SamplerConfig, SamplerKind
from factory.diffusion.schedule import ScheduleConfig, ScheduleKind, alphas_cumprod
from factory.diffusion.smlm_data import SmlmGeometry
from factory.diffusion.unet import UNet, UNetConfig
from factory.errors import FactoryError

NOISE_LEVEL_SCALE = 5000.0  # WaveGrad's linear scale: sqrt(gamma) in [0, 1] -> the sinusoidal embedding's "position"
TRAIN_SCHEDULE = ScheduleConfig(ScheduleKind.linear_exact, 2000, 1e-6, 1e-2)  # SR3's training range: gamma_T = 4.39e-5
# Until a schedule search has run (intermediate checkpoints): SR3's common inference choice, 100 steps, betas 1e-4..0.1
# (gamma_N = 5.6e-3), visited by the ancestral sampler as SR3 does.
DEFAULT_INFERENCE = ScheduleConfig(ScheduleKind.linear_exact, 100, 1e-4, 0.1)
DEFAULT_SAMPLER = SamplerConfig(kind=SamplerKind.ddpm, steps=100)


@dataclass(frozen=True)
class ConditionalConfig:
    """Everything needed to rebuild and use a conditional model (stored in its checkpoint)."""

    unet: UNetConfig
    geometry: SmlmGeometry
    electrons_scale: float  # photo-electrons per unit of the condition channel
    y0_mean: float = -1.0  # mean training target in model units (2 y - 1): the start state's centre
    train_schedule: ScheduleConfig = TRAIN_SCHEDULE
    inference: ScheduleConfig = DEFAULT_INFERENCE  # the noise levels restore visits (chosen by the schedule search)
    sampler: SamplerConfig = DEFAULT_SAMPLER  # steps <= inference.num_timesteps (all of them after the search)

    kind = ModelKind.sr3

    @property
    def kde_scale(self) -> float:
        """2 pi sigma_px^2: KDE (emitters per HR pixel) -> target units (an isolated emitter peaks at 1)."""
        return 2.0 * math.pi * self.geometry.kde_sigma_px ** 2

    @property
    def size_multiple(self) -> int:
        """HR sides must be multiples of this."""
        return self.unet.size_multiple

    def check(self) -> None:
        self.unet.check(in_channels=2)
        self.geometry.check()
        for schedule in (self.train_schedule, self.inference):
            schedule.check()
        self.sampler.validate(self.inference.num_timesteps)
        if not (math.isfinite(self.y0_mean) and -1.0 <= self.y0_mean <= 1e3):
            raise FactoryError(f"the model's y0_mean must be a finite target value >= -1, got {self.y0_mean}.")
        if not (math.isfinite(self.electrons_scale) and self.electrons_scale > 0):
            raise FactoryError(f"the model's electrons_scale must be a positive number of photo-electrons, got {self.electrons_scale}.")

    def build(self) -> "ConditionalUNet":
        return ConditionalUNet(self.unet)

    def to_model(self, kde: torch.Tensor) -> torch.Tensor:
        """KDE (emitters per HR pixel) -> the network's space, 2 y - 1 (background -1)."""
        return 2.0 * self.kde_scale * kde - 1.0

    def from_model(self, x0: torch.Tensor) -> torch.Tensor:
        """The network's space -> KDE (emitters per HR pixel), clamped at 0."""
        return ((x0 + 1.0) / (2.0 * self.kde_scale)).clamp(min=0.0)

    def condition(self, frames_e: torch.Tensor) -> torch.Tensor:
        """(B, h, w) photo-electrons -> (B, 1, h k, w k): scaled by 1 / electrons_scale, bicubic upsampling by k.

        ``align_corners=False``: HR pixel J's centre sits at (J + 0.5) / k LR pixels, as on the camera.
        """
        x = (frames_e / self.electrons_scale)[:, None]  # (B, 1, h, w)
        k = self.geometry.upscale
        return x if k == 1 else F.interpolate(x, scale_factor=k, mode="bicubic", align_corners=False)

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "geometry": self.geometry.to_dict(), "electrons_scale": self.electrons_scale,
                "y0_mean": self.y0_mean,
                "train_schedule": self.train_schedule.to_dict(), "inference": self.inference.to_dict(),
                "sampler": self.sampler.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionalConfig":
        return cls(UNetConfig.from_dict(d["unet"]), SmlmGeometry.from_dict(d["geometry"]), float(d["electrons_scale"]),
                   float(d["y0_mean"]), ScheduleConfig.from_dict(d["train_schedule"]), ScheduleConfig.from_dict(d["inference"]),
                   SamplerConfig.from_dict(d["sampler"]))


class ConditionalUNet(nn.Module):
    """eps_theta(y_t, sqrt(gamma), x): (B, 1, H, W), (B,), (B, 1, H, W) -> (B, 1, H, W).

    The UNet of the DDPM with two input channels (y_t, condition); the noise level enters
    through the same sinusoidal embedding as a timestep would, at NOISE_LEVEL_SCALE * sqrt(gamma).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config, in_channels=2)

    def forward(self, y_t: torch.Tensor, noise_level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape != y_t.shape:
            raise ValueError(f"condition {tuple(cond.shape)} and state {tuple(y_t.shape)} differ in shape")
        return self.unet(torch.cat([y_t, cond], dim=1), NOISE_LEVEL_SCALE * noise_level)  # (B, 1, H, W)


def noise_level_table(schedule: ScheduleConfig) -> torch.Tensor:
    """(T + 1,) float64: gamma_0 = 1, then gamma_t = abar_t for t = 1..T (decreasing)."""
    return torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod(schedule)])


def draw_gammas(table: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n noise levels, piecewise uniform: t ~ U{1..T}, gamma ~ U(gamma_t, gamma_{t-1}); (n,) float64 in [gamma_T, 1]."""
    T = len(table) - 1
    t = torch.randint(1, T + 1, (n,), generator=gen)  # (n,)
    u = torch.rand(n, generator=gen, dtype=torch.float64)  # (n,)
    return table[t - 1] + u * (table[t] - table[t - 1])


def conditional_loss(net: nn.Module, cfg: ConditionalConfig, table: torch.Tensor, frames_e: torch.Tensor,
                     kde: torch.Tensor, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """L_simple = E ||eps - eps_theta(sqrt(g) y0 + sqrt(1 - g) eps, sqrt(g), x)||^2 for one batch.

    ``frames_e`` (B, h, w) photo-electrons and ``kde`` (B, H, W) on the CPU; every random draw
    (gamma, then eps) comes from ``gen`` on the CPU, so a batch is the same on every device.
    """
    y0 = cfg.to_model(kde)[:, None].to(device)  # (B, 1, H, W)
    cond = cfg.condition(frames_e.to(device))  # (B, 1, H, W)
    gamma = draw_gammas(table, len(kde), gen).float()  # (B,)
    noise = torch.randn(y0.shape, generator=gen).to(device)  # (B, 1, H, W)
    g = gamma.to(device)[:, None, None, None]
    y_t = g.sqrt() * y0 + (1 - g).sqrt() * noise  # (B, 1, H, W)
    eps = net(y_t, gamma.sqrt().to(device), cond)
    return F.mse_loss(eps.float(), noise)
