"""What a ``factory generate`` run is asked: GenerateConfig (the data) and ClusterConfig (where and how wide).

``GenerateConfig`` holds the user's choices, ``None`` meaning "the source's or package's default";
:func:`factory.pipeline.plan.resolve` turns it into the persisted :class:`factory.store.spec.RunSpec`.
``ClusterConfig`` never changes a stored byte.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from factory.structures.config import StructureConfig

DEFAULT_STORE = "pairs.zarr"


class Product(str, Enum):
    pairs = "pairs"  # LR widefield frame + HR density (restoration, CARE)
    smlm = "smlm"  # SMLM frame stack + per-frame KDE targets + emitter table (localization)


@dataclass(frozen=True)
class GenerateConfig:
    """The user's request (CLI options or ``jobs/generate.py``)."""

    n: int
    out: str | Path = DEFAULT_STORE  # a folder path or a URL (s3://bucket/pairs.zarr)
    structure: StructureConfig = field(default_factory=StructureConfig)
    product: Product = Product.pairs
    degradation: str | Path | None = None  # .json/.toml: DegradationConfig (pairs) or SmlmConfig (smlm); None = defaults
    frames: int | None = None  # smlm: camera frames per sample; None = the SMLM config's n_frames
    batch_size: int = 8
    shard_size: int = 16
    seed: int = 0
    hr_size: int | None = None  # HR side in px; None = the source's default (the DDPM's training size)
    hr_pixel_nm: float | None = None  # simulate / images: HR pixel size; None = the default (40 nm / the images' own)
    overwrite: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide to run; never changes the data."""

    address: str | None = None  # None = embedded local Ray on 127.0.0.1; "auto" or "ray://host:port" joins a cluster
    workers: int | None = None  # structure workers; None = one per GPU (ddpm), else one per CPU
    commit_attempts: int = 3  # tries of a shard's degrade+commit task before it is reported failed
    actor_losses_per_shard: int = 4  # re-queues of one shard after actor/node loss before it is reported failed
    lease_ttl_s: float = 60.0  # the store's writer lease expires this long after its last renewal
    connect_timeout_s: float = 60.0  # joining a cluster (--address) fails in one sentence after this long
