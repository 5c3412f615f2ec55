"""Where everything is inside a store: the one place that knows names and paths (layout version 2).

    STORE/zarr.json                        root group; attrs["factory"]  (schemas/group_attrs.v2.json)
    STORE/hr/zarr.json   STORE/hr/0/       OME-Zarr (NGFF 0.5) image group and its array (N, H, W) float32 density
    STORE/lr/zarr.json   STORE/lr/0/       pairs: OME-Zarr image group and its array (N, h, w) uint16 camera ADU
    STORE/frames/                          smlm: (N, F, h, w) uint16 camera ADU
    STORE/kde/                             smlm: (N, F, H, W) float32 per-frame emitter density (KDE) on the HR grid
    STORE/camera/<map>/                    smlm with sCMOS maps: (h, w) float32 per-pixel maps (drawn once per run)
    STORE/manifest/part-{k:06d}.parquet    shard k's rows: THE COMMIT MARKER of shard k
    STORE/manifest.parquet                 every row, written at finalize (complete stores); readers prefer it
    STORE/emitters/part-{k:06d}.parquet    smlm: shard k's emitters (written before the marker)
    STORE/audit/audit.parquet              `factory audit`
    STORE/.factory/run.json                the group attrs as planned; `factory repair` rebuilds zarr.json from it
    STORE/.factory/lease.json              the single writer's lease (factory.store.lease)

Every per-sample array uses the zarr sharding codec: zarr shard = S consecutive samples (one store
shard), inner chunk = one sample, zstd; the file of shard k is ``<path>/c/k/0/0[/0]``. Layout 1
(version 1 stores, read only) kept ``hr`` and ``lr`` as plain arrays at the top and had no
compacted manifest, run.json or lease.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MANIFEST_DIR = "manifest"
COMPACT_MANIFEST = "manifest.parquet"
EMITTERS_DIR = "emitters"
AUDIT_FILE = "audit/audit.parquet"
META_DIR = ".factory"
RUN_JSON = f"{META_DIR}/run.json"
LEASE = f"{META_DIR}/lease.json"
ROOT_META = "zarr.json"
PART = re.compile(r"^part-(\d{6,})\.parquet$")
TEMP = re.compile(r"^\..*\.tmp$")  # a temp file of an interrupted write (hidden, never matched by PART)
# Top-level names a store owns: `--overwrite` and `repair` delete these and nothing else.
OWNED = (ROOT_META, "hr", "lr", "frames", "kde", "camera", MANIFEST_DIR, COMPACT_MANIFEST, EMITTERS_DIR, "audit", META_DIR)

# Every chunk is written, even all zero (zarr skips "empty" chunks by default): an empty KDE frame or a black HR
# image must read as data, not as a missing chunk (which readers refuse).
ARRAY_CONFIG = {"write_empty_chunks": True}
UNITS = {"hr": "normalized density in [0, 1] (the structure source's output scale)",
         "lr": "camera ADU (uint16; offset, gain and quantization per the manifest)",
         "frames": "camera ADU (uint16; offset, gain and quantization per the manifest)",
         "kde": "emitters per HR pixel: per frame, a unit-mass Gaussian of kde_sigma_nm at each active emitter"}


def part_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


def manifest_part(shard: int) -> str:
    return f"{MANIFEST_DIR}/{part_name(shard)}"


def emitters_part(shard: int) -> str:
    return f"{EMITTERS_DIR}/{part_name(shard)}"


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample data array of a store."""

    name: str  # hr | lr | frames | kde
    path: str  # inside the store
    dtype: str
    sample_shape: tuple[int, ...]  # one sample's shape
    pixel_nm: float
    dims: tuple[str, ...]  # dimension names, sample first
    ome: bool = False  # lives in an OME-Zarr image group (path = "<name>/0")

    @property
    def unit(self) -> str:
        return UNITS[self.name]

    @property
    def checksum_column(self) -> str:
        return f"{self.name}_checksum"

    def shard_key(self, shard: int) -> str:
        """The zarr shard file of store shard k (default chunk key encoding ``c/k/0/0``)."""
        return "/".join([self.path, "c", str(shard)] + ["0"] * len(self.sample_shape))

    def to_json(self, n: int) -> dict:
        return {"path": self.path, "dtype": self.dtype, "shape": [n, *self.sample_shape], "pixel_nm": self.pixel_nm,
                "unit": self.unit, "checksum_column": self.checksum_column}


def data_arrays(spec) -> tuple[ArraySpec, ...]:
    """The per-sample arrays of a run (a :class:`factory.store.spec.RunSpec`), in commit order."""
    H, h = spec.hr_size, spec.lr_size
    if spec.schema_version == 1:
        return (ArraySpec("hr", "hr", "float32", (H, H), spec.hr_pixel_nm, ("sample", "y", "x")),
                ArraySpec("lr", "lr", "uint16", (h, h), spec.lr_pixel_nm, ("sample", "y", "x")))
    hr = ArraySpec("hr", "hr/0", "float32", (H, H), spec.hr_pixel_nm, ("sample", "y", "x"), ome=True)
    if spec.product == "smlm":
        F = spec.frames
        return (hr, ArraySpec("frames", "frames", "uint16", (F, h, h), spec.lr_pixel_nm, ("sample", "frame", "y", "x")),
                ArraySpec("kde", "kde", "float32", (F, H, H), spec.hr_pixel_nm, ("sample", "frame", "y", "x")))
    return (hr, ArraySpec("lr", "lr/0", "uint16", (h, h), spec.lr_pixel_nm, ("sample", "y", "x"), ome=True))
