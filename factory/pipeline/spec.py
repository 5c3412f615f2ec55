"""What a ``factory generate`` run is asked (GenerateConfig) and what it resolves to (RunSpec).

``GenerateConfig`` holds the user's choices, with ``None`` meaning "the model's
or package's default". ``RunSpec`` is the resolved, persisted spec: every field that
changes a stored byte, plus provenance. It is written to the store before any work
(``schemas/run_spec.v1.json``) and compared on every rerun.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from factory.pipeline import schemas

DEFAULT_STORE = Path("pairs.zarr")
# Fields that are provenance, not content: a rerun may differ in them.
NOT_COMPARED = ("package_version", "model_path")


@dataclass(frozen=True)
class GenerateConfig:
    """The user's request (CLI options or ``jobs/generate.py``)."""

    n: int
    out: Path = DEFAULT_STORE
    model: str = "default"  # "default" (the shipped model) or a checkpoint path
    sampler: dict = field(default_factory=lambda: {"kind": "dpmpp", "steps": 20, "eta": 0.0})  # SamplerConfig.to_dict()
    batch_size: int = 8
    shard_size: int = 16
    seed: int = 0
    degradation: Path | None = None  # .json/.toml DegradationConfig; None = the defaults
    hr_size: int | None = None  # HR side in px; None = the model's training size
    bf16: bool = False  # bf16 autocast for the sampler network (GPU); changes HR bits
    overwrite: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide to run; never changes the data."""

    address: str | None = None  # None = embedded local Ray on 127.0.0.1; "auto" or "ray://host:port" joins a cluster
    workers: int | None = None  # sampler actors; None = one per GPU, else one per CPU
    max_in_flight: int | None = None  # shards sampling or committing at once; None = 2 per worker
    commit_attempts: int = 3  # tries of a shard's degrade+commit task before it is reported failed
    actor_losses_per_shard: int = 4  # re-queues of one shard after actor/node loss before it is reported failed


@dataclass(frozen=True)
class RunSpec:
    """The resolved run: see ``schemas/run_spec.v1.json`` for each field's meaning and units."""

    n: int
    seed: int
    shard_size: int
    batch_size: int
    sampler: dict  # SamplerConfig.to_dict()
    model_id: str
    model_path: str
    hr_size: int
    lr_size: int
    hr_pixel_nm: float
    lr_pixel_nm: float
    degradation: dict  # DegradationConfig.to_dict()
    cpu_threads: int = 1
    bf16: bool = False
    package_version: str = ""
    schema_version: int = schemas.SCHEMA_VERSION

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_ids(self, shard: int) -> range:
        """Sample ids of shard k: [k*S, min((k+1)*S, n))."""
        lo = shard * self.shard_size
        return range(lo, min(lo + self.shard_size, self.n))

    def batches(self, shard: int) -> list[range]:
        """The fixed sampler batches of shard k: consecutive ids [k*S + j*B, ...), never by arrival order."""
        ids = self.shard_ids(shard)
        return [ids[j:j + self.batch_size] for j in range(0, len(ids), self.batch_size)]

    def sampler_config(self):
        from factory.diffusion.sampling import SamplerConfig

        return SamplerConfig.from_dict(self.sampler)

    def degradation_config(self):
        from factory.optics import DegradationConfig

        return DegradationConfig.from_dict(self.degradation)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        schemas.validate(d, f"run_spec.v{schemas.SCHEMA_VERSION}.json", "run spec")
        return cls(**d)

    def validate(self) -> None:
        schemas.validate(self.to_dict(), f"run_spec.v{schemas.SCHEMA_VERSION}.json", "run spec")

    def differing_fields(self, other: "RunSpec") -> list[str]:
        """Names of the content fields (not provenance) whose values differ; nested dicts by dotted key."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for name in a:
            if name in NOT_COMPARED or a[name] == b[name]:
                continue
            if isinstance(a[name], dict) and isinstance(b[name], dict):
                keys = sorted(set(a[name]) | set(b[name]))
                out += [f"{name}.{k}" for k in keys if a[name].get(k) != b[name].get(k)]
            else:
                out.append(name)
        return out
