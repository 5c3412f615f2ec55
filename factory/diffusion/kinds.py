"""Which kind of model a checkpoint holds (its ``format`` metadata), in a module both kinds' configs can import."""
from __future__ import annotations

import enum


class ModelKind(str, enum.Enum):
    """The value is the checkpoint file's ``format`` metadata string."""

    ddpm = "factory-ddpm"  # unconditional DDPM: HR structure from noise (factory train / sample / generate)
    sr3 = "factory-sr3"  # conditional SR3-style model: the KDE of an SMLM frame's emitters (factory train-smlm / restore)

    @property
    def use(self) -> str:
        """What this kind is for, as the end of a sentence."""
        return {ModelKind.ddpm: "an unconditional DDPM (for factory sample and generate)",
                ModelKind.sr3: "a conditional SMLM restoration model (for factory restore)"}[self]
