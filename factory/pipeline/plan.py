"""Plan: resolve a GenerateConfig into a RunSpec, then create the store or decide how to resume it.

Resume rules (the store's group attrs hold the spec written at plan time):

* no store at ``out``          -> create it (status planned) before any sample is made;
* a store with the same spec   -> redo only the shards without a manifest part;
  if it is complete, there is nothing to do;
* a store with another spec    -> refused in one sentence naming the differing
  fields (``n`` included: a store is never silently extended), unless ``overwrite``,
  which deletes and recreates it;
* anything else at ``out``     -> refused (a non-empty folder that is not a factory
  store is never deleted, even with ``overwrite``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from factory.errors import FactoryError
from factory.pipeline.spec import GenerateConfig, RunSpec
from factory.store import Store, is_store


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    model_card: dict
    todo: list[int]  # shards without a committed manifest part, ascending
    resumed: bool  # the store existed with the same spec
    complete: bool  # the store was already complete: nothing to do


def resolve(cfg: GenerateConfig) -> tuple[RunSpec, dict]:
    """The run spec the request asks for, and the model card; FactoryError on any impossible value."""
    from factory.diffusion import checkpoint
    from factory.diffusion.sampling import SamplerConfig, check_size
    from factory.optics import DegradationConfig

    for name in ("n", "shard_size", "batch_size"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FactoryError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")
    if cfg.seed < 0:
        raise FactoryError(f"--seed must be >= 0, got {cfg.seed}.")
    ckpt = checkpoint.load(cfg.model)
    sampler = SamplerConfig.from_dict(cfg.sampler)
    sampler.validate(ckpt.config.schedule.num_timesteps)
    degradation = DegradationConfig.load(cfg.degradation) if cfg.degradation else DegradationConfig.dataset_defaults()
    hr_size = check_size(ckpt, cfg.hr_size, "--hr-size")
    k = degradation.downsample
    if hr_size % k:
        raise FactoryError(f"--hr-size {hr_size} px is not a multiple of the degradation's downsample factor {k}.")
    spec = RunSpec(n=cfg.n, seed=cfg.seed, shard_size=cfg.shard_size, batch_size=cfg.batch_size,
                   sampler=sampler.to_dict(), model_id=ckpt.model_id, model_path=str(Path(ckpt.path).resolve()),
                   hr_size=hr_size, lr_size=hr_size // k, hr_pixel_nm=float(ckpt.config.hr_pixel_nm),
                   lr_pixel_nm=float(ckpt.config.hr_pixel_nm) * k, degradation=degradation.to_dict(),
                   bf16=bool(cfg.bf16), package_version=version("factory"))
    spec.validate()
    return spec, ckpt.card


def prepare(out: Path, spec: RunSpec, model_card: dict, overwrite: bool) -> Plan:
    """Create the store at ``out`` (attrs first) or check that the existing one is this run."""
    out = Path(out)
    if out.exists() and is_store(out):
        if not overwrite:
            store = Store.open(out, writable=True)
            diff = store.spec.differing_fields(spec)
            if diff:
                raise FactoryError(f"{out} holds a run with a different config ({', '.join(diff)} differ); "
                                   f"rerun with its settings to resume it, or pass --overwrite to replace it.")
            store.remove_stale_temps()
            done = set(store.committed_shards())
            todo = [k for k in range(spec.num_shards) if k not in done]
            # the stored spec, with this run's path to the (identical, by sha256) model
            resumed = dataclasses.replace(store.spec, model_path=spec.model_path)
            return Plan(resumed, model_card, todo, resumed=True, complete=store.complete and not todo)
        shutil.rmtree(out)
    elif out.exists():
        if out.is_dir() and any(out.iterdir()):
            raise FactoryError(f"{out} exists and is not a factory store; choose another --out (it is never deleted).")
        if not overwrite and out.is_file():
            raise FactoryError(f"{out} exists and is a file; pass --overwrite to replace it.")
        out.rmdir() if out.is_dir() else out.unlink()
    parent = out.resolve().parent
    if not parent.is_dir():
        raise FactoryError(f"cannot create {out}: folder {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise FactoryError(f"cannot create {out}: folder {parent} is not writable.")
    Store.create(out, spec, model_card)
    return Plan(spec, model_card, list(range(spec.num_shards)), resumed=False, complete=False)
