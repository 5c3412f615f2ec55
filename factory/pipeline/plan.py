"""Plan: resolve a GenerateConfig into a RunSpec, then create the store or decide how to resume it.

Rules at ``out`` (the store's location: a folder or an object-storage URL):

* nothing there, or an empty folder  -> create the store (run.json, attrs with status planned,
                                        arrays) before any sample is made;
* a store with the same spec          -> redo only the shards without a manifest part; a complete
                                        store has nothing to do;
* a store with another spec           -> refused in one sentence naming the differing fields
                                        (``n`` included: a store is never silently extended),
                                        unless ``overwrite``, which deletes what the store owns
                                        (never other files in the folder) and plans anew;
* a file, or a folder that is not a store -> refused, even with ``overwrite``.

:func:`inspect` decides this read-only, before any cluster is joined (refusals and "nothing to do"
cost no Ray); :func:`prepare` acts on it under the store's writer lease.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from enum import Enum
from importlib.metadata import version
from typing import Iterator

from factory.errors import FactoryError
from factory.files import check_parent_writable
from factory.pipeline.spec import GenerateConfig, Product
from factory.store import Location, RunSpec, Store, is_store, layout, writer
from factory.structures import resolve as resolve_structure


class Action(str, Enum):
    create = "create"  # plan a new store
    resume = "resume"  # same spec: finish the missing shards (or only finalize)
    overwrite = "overwrite"  # delete what the store owns, then create
    nothing = "nothing"  # already complete


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    structure_card: dict
    done: frozenset[int]  # shards committed before this run
    action: Action

    def todo(self) -> Iterator[int]:
        """Shards without a manifest part, ascending, lazily (memory O(committed), never O(n))."""
        return (k for k in range(self.spec.num_shards) if k not in self.done)

    @property
    def todo_count(self) -> int:
        return self.spec.num_shards - len(self.done)

    @property
    def skipped_samples(self) -> int:
        return sum(len(self.spec.shard_ids(k)) for k in self.done)


def _positive(cfg: GenerateConfig, name: str, limit: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise FactoryError(f"--{name.replace('_', '-')} must be an integer from 1 to {limit:,}, got {value!r}.")


def resolve(cfg: GenerateConfig) -> tuple[RunSpec, dict]:
    """The run spec the request asks for, and the structure source's card; FactoryError on any impossible value."""
    _positive(cfg, "n", 1_000_000_000)
    _positive(cfg, "shard_size", 100_000)
    _positive(cfg, "batch_size", 100_000)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise FactoryError(f"--seed must be an integer >= 0, got {cfg.seed!r}.")
    product = Product(cfg.product)
    if product is Product.smlm:
        from factory.smlm import SmlmConfig

        degradation = SmlmConfig.load(cfg.degradation) if cfg.degradation else SmlmConfig.defaults()
        if cfg.frames is not None:
            _positive(cfg, "frames", 100_000)
            degradation = dataclasses.replace(degradation, n_frames=cfg.frames)
        frames = degradation.n_frames
    else:
        from factory.optics import DegradationConfig

        if cfg.frames is not None:
            raise FactoryError("--frames applies to --mode smlm only.")

        degradation = DegradationConfig.load(cfg.degradation) if cfg.degradation else DegradationConfig.dataset_defaults()
        frames = 0
    k = degradation.downsample
    source = resolve_structure(cfg.structure, cfg.hr_size, cfg.hr_pixel_nm, multiple=k)
    if source.hr_size % k:
        raise FactoryError(f"--hr-size {source.hr_size} px is not a multiple of the degradation's downsample factor {k}.")
    spec = RunSpec(n=cfg.n, seed=cfg.seed, shard_size=cfg.shard_size, batch_size=cfg.batch_size, product=product.value,
                   structure=source.structure, hr_size=source.hr_size, lr_size=source.hr_size // k,
                   hr_pixel_nm=source.hr_pixel_nm, lr_pixel_nm=source.hr_pixel_nm * k, degradation=degradation.to_dict(),
                   frames=frames, package_version=version("factory"))
    spec.validate()
    return spec, source.card


def inspect(loc: Location, spec: RunSpec, overwrite: bool) -> tuple[Action, Store | None]:
    """What :func:`prepare` will do at ``loc`` (read-only); refusals are FactoryErrors."""
    if is_store(loc):
        store = Store.open(loc)
        if overwrite:
            return Action.overwrite, store
        if store.version < spec.schema_version:
            raise FactoryError(f"{loc} was written by an older factory (store version {store.version}); it can be read but "
                               f"not resumed by this one: pass --overwrite to replace it, or choose another --out.")
        diff = store.spec.differing_fields(spec)
        if diff:
            raise FactoryError(f"{loc} holds a run with a different config ({', '.join(diff)} differ); "
                               f"rerun with its settings to resume it, or pass --overwrite to replace it.")
        return (Action.nothing if store.complete else Action.resume), store
    if loc.exists(layout.RUN_JSON):
        raise FactoryError(f"{loc} is a damaged factory store (its root zarr.json is missing); "
                           f"`factory repair {loc}` rebuilds it.")
    if loc.local:
        path = loc.root
        if os.path.isfile(path) or (os.path.exists(path) and not os.path.isdir(path)):
            raise FactoryError(f"{path} exists and is a file, not a store; choose another --out (it is never replaced).")
        if os.path.isdir(path) and [n for n in os.listdir(path) if n != layout.META_DIR]:
            raise FactoryError(f"{path} exists and is not a factory store; choose another --out (it is never deleted).")
        check_parent_writable(path)
    elif [n for n in loc.list() if n != layout.META_DIR]:  # our own lease may already be there
        raise FactoryError(f"{loc} holds objects but no factory store; choose another --out (they are never deleted).")
    return Action.create, None


def prepare(loc: Location, spec: RunSpec, structure_card: dict, overwrite: bool) -> Plan:
    """Act on :func:`inspect`'s decision; the caller holds the store's writer lease."""
    action, store = inspect(loc, spec, overwrite)
    if action is Action.overwrite:
        writer.delete_owned(loc)
    if action in (Action.create, Action.overwrite):
        store = writer.create(loc, spec, structure_card)
        if spec.product == "smlm":
            from factory.pipeline.smlm_stage import run_camera_maps

            maps = run_camera_maps(spec)
            if maps is not None:  # drawn from (seed, config) alone; kept so users see what every frame was made with
                writer.write_run_arrays(store, {f"camera/{k}": v for k, v in maps.to_arrays().items()},
                                        {"description": "sCMOS per-pixel maps (factory.smlm.CameraMaps), camera grid"})
        return Plan(spec, structure_card, frozenset(), action)
    writer.remove_stale_temps(loc)
    resumed = RunSpec.from_dict({**store.spec.to_dict(), "structure": {**store.spec.structure,
                                 **{k: spec.structure[k] for k in ("model_path", "paths") if k in spec.structure}}})
    return Plan(resumed, structure_card, frozenset(store.listed_shards()), action)
