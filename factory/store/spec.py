"""RunSpec: the resolved, persisted run that determines every byte of a store.

Written into the store before any work (``schemas/run_spec.v2.json``) and compared on every rerun:
a store is resumed only by the run that planned it. Fields that are provenance, not content
(``package_version``, where the model or images were read from) may differ between reruns.

``structure`` says where the HR densities come from (``kind``: ddpm | simulate | images, ``id``: a
SHA-256 of the content source; for ddpm also ``model_id``, ``model_path``, ``sampler``, ``bf16``);
``product`` what is made of each (pairs | smlm); ``degradation`` the product's run-level ranges.
Version 1 specs (pairs from a DDPM only, sampler and model at the top level) are read and
converted; they are never written.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from factory.errors import FactoryError
from factory.store import schemas

# Provenance, not content: a rerun may differ in them (dotted keys for nested fields).
NOT_COMPARED = ("package_version", "structure.model_path", "structure.paths")


@dataclass(frozen=True)
class RunSpec:
    """The resolved run: see ``schemas/run_spec.v2.json`` for each field's meaning and units."""

    n: int
    seed: int
    shard_size: int
    batch_size: int
    product: str  # "pairs" | "smlm"
    structure: dict  # {"kind", "id", ...}: factory.structures.StructureSpec.to_dict()
    hr_size: int
    lr_size: int
    hr_pixel_nm: float
    lr_pixel_nm: float
    degradation: dict  # pairs: DegradationConfig.to_dict(); smlm: SmlmConfig.to_dict()
    frames: int = 0  # camera frames per sample (smlm)
    cpu_threads: int = 1
    package_version: str = ""
    schema_version: int = schemas.SCHEMA_VERSION

    # ----------------------------------------------------------------- shards and batches
    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_ids(self, shard: int) -> range:
        """Sample ids of shard k: [k*S, min((k+1)*S, n))."""
        lo = shard * self.shard_size
        return range(lo, min(lo + self.shard_size, self.n))

    def batches(self, shard: int) -> list[range]:
        """The fixed batches of shard k: consecutive ids [k*S + j*B, ...), never by arrival order."""
        ids = self.shard_ids(shard)
        return [ids[j:j + self.batch_size] for j in range(0, len(ids), self.batch_size)]

    # ----------------------------------------------------------------- the structure source
    @property
    def structure_kind(self) -> str:
        return self.structure["kind"]

    @property
    def model_id(self) -> str | None:
        return self.structure.get("model_id")

    @property
    def model_path(self) -> str | None:
        return self.structure.get("model_path")

    @property
    def sampler(self) -> dict | None:
        return self.structure.get("sampler")

    @property
    def bf16(self) -> bool:
        return bool(self.structure.get("bf16", False))

    def sampler_config(self):
        from factory.diffusion.sampling import SamplerConfig

        return SamplerConfig.from_dict(self.sampler)

    def degradation_config(self):
        """The product's run-level config object (DegradationConfig for pairs, SmlmConfig for smlm)."""
        if self.product == "smlm":
            from factory.smlm import SmlmConfig

            return SmlmConfig.from_dict(self.degradation)
        from factory.optics import DegradationConfig

        return DegradationConfig.from_dict(self.degradation)

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """Validate against the spec's own schema version and build (version 1 is converted)."""
        if not isinstance(d, dict):
            raise FactoryError(f"run spec must be a mapping, got {type(d).__name__}.")
        version = d.get("schema_version")
        if version == 1:
            schemas.validate(d, "run_spec.v1.json", "run spec")
            return cls._from_v1(d)
        schemas.validate(d, f"run_spec.v{schemas.SCHEMA_VERSION}.json", "run spec")
        return cls(**d)

    @classmethod
    def _from_v1(cls, d: dict) -> "RunSpec":
        structure = {"kind": "ddpm", "id": d["model_id"], "model_id": d["model_id"], "model_path": d["model_path"],
                     "sampler": d["sampler"], "bf16": bool(d.get("bf16", False))}
        return cls(n=d["n"], seed=d["seed"], shard_size=d["shard_size"], batch_size=d["batch_size"], product="pairs",
                   structure=structure, hr_size=d["hr_size"], lr_size=d["lr_size"], hr_pixel_nm=d["hr_pixel_nm"],
                   lr_pixel_nm=d["lr_pixel_nm"], degradation=d["degradation"], frames=0, cpu_threads=d["cpu_threads"],
                   package_version=d["package_version"], schema_version=1)

    def validate(self) -> None:
        schemas.validate(self.to_dict(), f"run_spec.v{schemas.SCHEMA_VERSION}.json", "run spec")

    def differing_fields(self, other: "RunSpec") -> list[str]:
        """Dotted names of the content fields (not provenance) whose values differ, e.g. ``structure.sampler.steps``."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        provenance = lambda key: any(key == p or key.startswith(p + ".") for p in NOT_COMPARED)  # noqa: E731
        keys = list(dict.fromkeys([*a, *b]))  # spec order
        return [k for k in keys if not provenance(k) and a.get(k) != b.get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
