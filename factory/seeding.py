"""Per-sample randomness: everything random about sample i derives from (run_seed, i).

``SeedSequence(run_seed, spawn_key=(i,))`` gives sample i its own entropy pool,
independent of batch position, shard size, worker count and restarts. Its
children are fixed by role, so adding a consumer never shifts another's stream.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_DIFFUSION, _DEGRADATION, _STRUCTURE, _RESTORE = 0, 1, 2, 3


def _child(run_seed: int, sample_id: int, role: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(run_seed, spawn_key=(int(sample_id), role))


def sample_seed(run_seed: int, sample_id: int) -> int:
    """A 63-bit integer that identifies sample i's randomness (recorded in the manifest)."""
    return int(np.random.SeedSequence(run_seed, spawn_key=(int(sample_id),)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def diffusion_generator(run_seed: int, sample_id: int) -> torch.Generator:
    """CPU torch generator for sample i's initial and ancestral noise (drawn on CPU on every device)."""
    import torch  # here, not at module level: CPU-only consumers (degrade tasks) need no torch

    seed = int(_child(run_seed, sample_id, _DIFFUSION).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(seed)


def degradation_rng(run_seed: int, sample_id: int) -> np.random.Generator:
    """numpy generator for sample i's degradation parameters and noise."""
    return np.random.default_rng(_child(run_seed, sample_id, _DEGRADATION))


def structure_rng(run_seed: int, sample_id: int) -> np.random.Generator:
    """numpy generator for sample i's structure when it is not sampled by a DDPM (simulate, images)."""
    return np.random.default_rng(_child(run_seed, sample_id, _STRUCTURE))


def restore_generator(run_seed: int, frame: int, sample: int) -> torch.Generator:
    """CPU torch generator for posterior sample k of frame f in ``factory restore`` (and the schedule search):
    its own stream per (seed, frame, k), so a frame's samples never depend on K, the batch or other frames."""
    import torch

    seq = np.random.SeedSequence(run_seed, spawn_key=(int(frame), _RESTORE, int(sample)))
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))
