"""What a run asks of its structure source (StructureConfig) and what that resolves to (the run spec's ``structure``).

    ddpm      HR images sampled from a diffusion model (default: the shipped one) with a stride sampler
    simulate  the mathematical microtubule model (factory.simulate), the baseline a DDPM must beat
    images    random patches of the user's own HR images: crop position and one of the 8 flips/rotations per sample

Every source yields (B, H, W) float32 "normalized density" in [0, 1] at ``hr_pixel_nm``; sample i's content
depends only on (run seed, i). The resolved ``structure`` dict carries ``kind`` and ``id`` (a SHA-256 of the
content source: checkpoint file, canonical simulation config, or image files + patch settings) plus what
the source needs to run; a store is resumed only with the same id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from factory.errors import FactoryError

DEFAULT_HR_PIXEL_NM = 40.0  # simulate / images without --hr-pixel-nm: the shipped model's grid
DEFAULT_HR_SIZE = 64  # simulate without --hr-size: the shipped model's patch side


class StructureKind(str, Enum):
    ddpm = "ddpm"
    simulate = "simulate"
    images = "images"


@dataclass(frozen=True)
class StructureConfig:
    """The user's choice of structure source (``factory generate --structure``)."""

    kind: StructureKind = StructureKind.ddpm
    model: str = "default"  # ddpm: "default" or a checkpoint path
    sampler: dict = field(default_factory=lambda: {"kind": "dpmpp", "steps": 20, "eta": 0.0})  # ddpm: SamplerConfig.to_dict()
    bf16: bool = False  # ddpm: bf16 autocast of the network (changes HR bits)
    images: tuple[str, ...] = ()  # images: TIFF files or folders
    images_pixel_nm: float | None = None  # images: their pixel size when the files do not record it
    simulation: dict = field(default_factory=dict)  # simulate: SimulationConfig fields to change from the defaults


@dataclass(frozen=True)
class Resolved:
    structure: dict  # the run spec's "structure"
    card: dict  # what to show about the source (model card, simulation parameters, image files)
    hr_size: int
    hr_pixel_nm: float


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def resolve(cfg: StructureConfig, hr_size: int | None, hr_pixel_nm: float | None, multiple: int) -> Resolved:
    """Check the request and pin down the source; ``multiple``: the HR side must be a multiple of it (downsample)."""
    kind = StructureKind(cfg.kind)
    if kind is not StructureKind.ddpm and (cfg.model != "default" or cfg.bf16):
        raise FactoryError(f"--model and --bf16 apply to --structure ddpm only, not {kind.value}.")
    if kind is not StructureKind.images and cfg.images:
        raise FactoryError(f"--images applies to --structure images only, not {kind.value}.")
    if hr_pixel_nm is not None and not hr_pixel_nm > 0:
        raise FactoryError(f"--hr-pixel-nm must be > 0 nm, got {hr_pixel_nm:g}.")
    if kind is StructureKind.ddpm:
        return _resolve_ddpm(cfg, hr_size, hr_pixel_nm)
    if kind is StructureKind.simulate:
        return _resolve_simulate(cfg, hr_size, hr_pixel_nm, multiple)
    from factory.structures.images import resolve_images

    return resolve_images(cfg, hr_size, hr_pixel_nm, multiple)


def _resolve_ddpm(cfg: StructureConfig, hr_size: int | None, hr_pixel_nm: float | None) -> Resolved:
    from factory.diffusion import checkpoint
    from factory.diffusion.sampling import SamplerConfig, check_size

    ckpt = checkpoint.load(cfg.model)
    sampler = SamplerConfig.from_dict(cfg.sampler)
    sampler.validate(ckpt.config.schedule.num_timesteps)
    if hr_pixel_nm is not None and abs(hr_pixel_nm - ckpt.config.hr_pixel_nm) > 1e-9:
        raise FactoryError(f"--hr-pixel-nm {hr_pixel_nm:g} differs from the model's {ckpt.config.hr_pixel_nm:g} nm; "
                           f"a DDPM generates at the pixel size it was trained at.")
    size = check_size(ckpt, hr_size, option="--hr-size")
    structure = {"kind": "ddpm", "id": ckpt.model_id, "model_id": ckpt.model_id,
                 "model_path": str(Path(ckpt.path).resolve()), "sampler": sampler.to_dict(), "bf16": bool(cfg.bf16)}
    return Resolved(structure, ckpt.card, size, float(ckpt.config.hr_pixel_nm))


def _resolve_simulate(cfg: StructureConfig, hr_size: int | None, hr_pixel_nm: float | None, multiple: int) -> Resolved:
    from factory.simulate import SimulationConfig, Texture

    size = DEFAULT_HR_SIZE if hr_size is None else hr_size
    pixel = DEFAULT_HR_PIXEL_NM if hr_pixel_nm is None else float(hr_pixel_nm)
    if size < 1 or size % multiple:
        raise FactoryError(f"--hr-size must be a positive multiple of {multiple} px, got {size}.")
    known = {f.name for f in dataclasses.fields(SimulationConfig)} - {"size_px", "pixel_nm"}
    unknown = sorted(set(cfg.simulation) - known)
    if unknown:
        raise FactoryError(f"unknown simulation parameter {unknown[0]!r}; known: {', '.join(sorted(known))}.")
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.simulation.items()}
    if "texture" in changes:
        changes["texture"] = Texture(changes["texture"])
    sim = SimulationConfig(size_px=int(size), pixel_nm=pixel, **changes)
    sim.check()
    config = {k: (v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple) else v)
              for k, v in dataclasses.asdict(sim).items()}
    structure = {"kind": "simulate", "id": sha256_json({"simulation": config}), "config": config}
    card = {"name": "factory mathematical microtubule model (factory.simulate)", **config}
    return Resolved(structure, card, int(size), pixel)
