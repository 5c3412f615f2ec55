"""The structure sources behind one interface: ``make(ids, run_seed) -> (B, H, W) float32 in [0, 1]``.

:func:`open_source` builds the source a run spec names, once per worker (a DDPM loads its weights
there). Sample i depends only on (run seed, i): the DDPM through ``seeding.diffusion_generator``
(its initial and ancestral noise), the others through ``seeding.structure_rng``.
"""
from __future__ import annotations

import numpy as np

from factory.errors import FactoryError


class DdpmSource:
    """HR images from a diffusion model with the run's sampler (one model per worker)."""

    def __init__(self, structure: dict, hr_size: int, device, cpu_threads: int = 1):
        from factory.diffusion import checkpoint

        self.ckpt = checkpoint.load(structure["model_path"], device=device)
        if self.ckpt.model_id != structure["model_id"]:
            raise FactoryError(f"{structure['model_path']} is not the model this run was planned with "
                               f"(sha256 {self.ckpt.model_id[:12]} != {structure['model_id'][:12]}).")
        from factory.diffusion.sampling import SamplerConfig

        self.sampler = SamplerConfig.from_dict(structure["sampler"])
        self.size, self.device, self.bf16 = hr_size, device, bool(structure.get("bf16", False))

    def make(self, ids, run_seed: int) -> np.ndarray:
        from factory.diffusion.sampling import sample_images

        return sample_images(self.ckpt, ids, run_seed, self.sampler, size=self.size, device=self.device, bf16=self.bf16)


class SimulateSource:
    """HR images from the mathematical microtubule model (factory.simulate)."""

    def __init__(self, structure: dict):
        from factory.simulate import SimulationConfig, Texture

        config = dict(structure["config"])
        config["texture"] = Texture(config["texture"])
        for key, value in config.items():
            if isinstance(value, list):
                config[key] = tuple(value)
        self.cfg = SimulationConfig(**config)

    def make(self, ids, run_seed: int) -> np.ndarray:
        from factory.seeding import structure_rng
        from factory.simulate import simulate_image

        return np.stack([simulate_image(self.cfg, structure_rng(run_seed, i)) for i in ids]).astype(np.float32, copy=False)


def open_source(structure: dict, hr_size: int, device=None):
    """The source a run spec's ``structure`` names (``device``: where a DDPM runs; the others use the CPU)."""
    kind = structure["kind"]
    if kind == "ddpm":
        return DdpmSource(structure, hr_size, device)
    if kind == "simulate":
        return SimulateSource(structure)
    if kind == "images":
        from factory.structures.images import ImageSource

        return ImageSource(structure, hr_size)
    raise FactoryError(f"unknown structure source '{kind}'.")
