"""The calibration's result: one table of estimates with uncertainties, and the degradation config file.

:func:`write_toml` writes a :class:`~factory.optics.DegradationConfig` as TOML (the format
``factory generate --degradation`` and ``factory degrade --config`` read) with the table above it
as comments, so the file says where each number came from. Values are written with enough digits
that :meth:`DegradationConfig.load` gives back the same config.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from factory.errors import FactoryError
from factory.files import atomic_write
from factory.optics import DegradationConfig
from factory.optics.config import RANGE_FIELDS


@dataclass(frozen=True)
class Estimate:
    """One measured quantity: value, standard error (None: no formal error, see ``source``), unit, how."""

    name: str
    value: float
    sd: float | None
    unit: str
    source: str

    def cells(self) -> tuple[str, str, str, str, str]:
        sd = "" if self.sd is None else ("inf" if not math.isfinite(self.sd) else f"{self.sd:.3g}")
        return self.name, f"{self.value:.4g}", sd, self.unit, self.source


@dataclass
class Calibration:
    """Estimates (a table), the config written from them, notes on assumptions, the LR contrast of the image's tiles."""

    estimates: list[Estimate]
    config: DegradationConfig
    notes: list[str] = field(default_factory=list)
    contrast: dict | None = None
    source: str = ""

    def table_lines(self) -> list[str]:
        header = ("estimate", "value", "+- sd", "unit", "from")
        rows = [header] + [e.cells() for e in self.estimates]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]

    def to_json(self) -> dict:
        return {"source": self.source, "estimates": [asdict(e) for e in self.estimates], "config": self.config.to_dict(),
                "notes": self.notes, "contrast": self.contrast}


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def toml_text(cal: Calibration) -> str:
    lines = [f"# factory calibrate: optics estimated from {cal.source}"]
    lines += ["# " + line for line in cal.table_lines()]
    if cal.contrast:
        lines.append(f"# LR contrast p99.8/p1 of the image's tiles (photo-electrons): median {cal.contrast['median']:.2f}, "
                     f"10-90 % {cal.contrast['p10']:.2f}-{cal.contrast['p90']:.2f} over {cal.contrast['frames']} tiles")
    lines += [f"# note: {n}" for n in cal.notes]
    d = cal.config.to_dict()
    lines.append("")
    for key in ("schema_version", "downsample", "psf_model", "photon_scale", *RANGE_FIELDS):
        if key in d and d[key] is not None:
            lines.append(f"{key} = {_toml_value(d[key])}")
    return "\n".join(lines) + "\n"


def write_toml(cal: Calibration, path: str | Path, overwrite: bool = False) -> Path:
    """Write the config (with the table as comments) atomically; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.suffix.lower() != ".toml":
        raise FactoryError(f"{path}: the calibrated config is written as TOML; name it *.toml.")
    if path.exists() and not overwrite:
        raise FactoryError(f"{path} already exists; pass --overwrite to replace it.")
    text = toml_text(cal)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    if DegradationConfig.load(path) != cal.config:  # the file must mean exactly the config
        raise AssertionError(f"{path} does not read back as the calibrated config")
    return path
