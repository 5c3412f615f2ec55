"""Which sampler, how many steps, and its options: the sampler choice as one typed object, with no torch.

The CLI, the run spec and the Ray driver import this module without paying for
torch; :mod:`factory.diffusion.samplers` maps each :class:`SamplerKind` to its
function in one table (``SAMPLERS``), so a new sampler is one function plus one
member here.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from factory.errors import FactoryError


class SamplerKind(str, enum.Enum):
    ddpm = "ddpm"  # ancestral, fixed large variance (Ho et al. 2020)
    ddim = "ddim"  # Song et al. 2021, eta-controlled noise
    dpmpp = "dpmpp"  # DPM-Solver++(2M), Lu et al. 2022

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def help(cls) -> str:
        """One line for CLI help: every sampler and what it is."""
        return "; ".join(f"{k.value}: {k.description}" for k in cls) + "."


_DESCRIPTIONS = {
    SamplerKind.ddpm: "ancestral DDPM, slow (Ho et al. 2020)",
    SamplerKind.ddim: "DDIM, eta-controlled noise (Song et al. 2021)",
    SamplerKind.dpmpp: "DPM-Solver++ 2M, 10-25 steps (Lu et al. 2022)",
}


class Spacing(str, enum.Enum):
    """How a few-step sampler picks its timesteps from 0..T-1.

    ``linspace`` and ``trailing`` both start at t = T-1, the noise level the
    model was trained to denoise from pure noise. ``leading`` (the old DDIM
    default) starts below it and is kept only for comparison.
    """

    linspace = "linspace"
    trailing = "trailing"
    leading = "leading"


@dataclass(frozen=True)
class SamplerConfig:
    """Which sampler, how many network evaluations, and its few options.

    ``eta`` applies to DDIM only and must lie in [0, 1]: 0 is the deterministic
    ODE, 1 the DDPM posterior variance; above 1 the DDIM variance
    sigma^2 = eta^2 (1 - a_s)/(1 - a_t) (1 - a_t/a_s) (Song et al. 2021, eq. 16)
    exceeds 1 - a_s and the update has no real direction term left (pure noise).
    ``spacing``: which timesteps the ``steps`` evaluations visit; both allowed
    choices start at T-1. ``clip_x0`` clamps every x0 prediction to the data range.
    """

    kind: SamplerKind = SamplerKind.dpmpp
    steps: int = 20
    eta: float = 0.0
    spacing: Spacing = Spacing.trailing
    clip_x0: bool = True

    def __post_init__(self):  # accept the enum's string values; validate() reports anything else
        for name, enum_type in (("kind", SamplerKind), ("spacing", Spacing)):
            value = getattr(self, name)
            if not isinstance(value, enum_type) and value in {e.value for e in enum_type}:
                object.__setattr__(self, name, enum_type(value))

    def validate(self, num_timesteps: int) -> None:
        """Raise FactoryError (one sentence) unless this config can run on a T-step model."""
        if not isinstance(self.kind, SamplerKind):
            raise FactoryError(f"unknown sampler '{self.kind}'; choose one of {', '.join(k.value for k in SamplerKind)}.")
        if self.spacing not in (Spacing.trailing, Spacing.linspace):
            raise FactoryError(f"timestep spacing must be trailing or linspace (both start at t=T-1), got '{self.spacing}'.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= num_timesteps:
            raise FactoryError(f"--steps must be an integer between 1 and the model's T={num_timesteps}, got {self.steps}.")
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and 0.0 <= self.eta <= 1.0):
            raise FactoryError(f"--eta must be between 0 and 1 (the DDIM variance formula needs it), got {self.eta}.")
        if self.eta > 0 and self.kind is not SamplerKind.ddim:
            raise FactoryError(f"--eta only applies to the ddim sampler; {self.kind.value} takes no eta.")

    def to_dict(self) -> dict:
        return {"kind": getattr(self.kind, "value", self.kind), "steps": self.steps, "eta": self.eta,
                "spacing": getattr(self.spacing, "value", self.spacing), "clip_x0": self.clip_x0}

    @classmethod
    def from_dict(cls, d: dict) -> "SamplerConfig":
        return cls(kind=d["kind"], steps=int(d["steps"]), eta=float(d.get("eta", 0.0)),
                   spacing=d.get("spacing", Spacing.trailing.value), clip_x0=bool(d.get("clip_x0", True)))
