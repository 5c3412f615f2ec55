"""``factory info``: what a store holds, as one JSON-able dict (:func:`collect`) and as rich tables (:func:`render`).

Counts (committed / planned samples and shards, missing shard ids), array shapes, dtypes and
pixel sizes (nm), the model (id and card), sampler and steps, the run's degradation ranges
next to the observed min / max of every numeric manifest column (DuckDB over the committed
parts), size on disk, status and schema version.
"""
from __future__ import annotations

import json

import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.table import Table

from factory import query
from factory.store import Store

NOT_RANGES = ("sample_id", "shard", "seed", "background_seed")  # identifiers: their min / max says nothing
CATEGORIES = ("structure", "sampler", "device", "psf_model", "host", "package_version")  # string columns shown as distinct values
CARD_KEYS = ("preset", "patch_size", "hr_pixel_nm", "training_images", "steps", "train_patches", "data_attribution")


def observed_ranges(store: Store) -> tuple[int, dict, dict]:
    """(rows, {numeric column: {min, max, unit}}, {category column: [distinct values]}) over the committed manifest."""
    schema = store.manifest_schema
    numeric = [f for f in schema if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)) and f.name not in NOT_RANGES]
    select = ", ".join(f'min("{f.name}"), max("{f.name}")' for f in numeric)
    con = query.connect(store)
    try:
        row = con.sql(f"SELECT count(*), {select} FROM manifest").fetchall()[0]
        distinct = {c: [r[0] for r in con.sql(f'SELECT DISTINCT "{c}" FROM manifest ORDER BY 1 LIMIT 20').fetchall()]
                    for c in CATEGORIES if c in schema.names}
    finally:
        con.close()
    ranges = {f.name: {"min": row[1 + 2 * j], "max": row[2 + 2 * j], "unit": f.metadata[b"unit"].decode()}
              for j, f in enumerate(numeric)}
    return int(row[0]), ranges, distinct


def _missing(committed: list[int], num_shards: int, limit: int = 100) -> list[int]:
    """The first ``limit`` shards not in ``committed`` (lazily: never a list of every shard)."""
    done, out = set(committed), []
    for k in range(num_shards):
        if k not in done:
            out.append(k)
            if len(out) == limit:
                break
    return out


def collect(store: Store) -> dict:
    """Everything ``factory info`` shows, JSON-serializable."""
    spec = store.spec
    committed = store.committed_shards()
    missing_count = store.num_shards - len(committed)
    rows, observed, distinct = observed_ranges(store)
    structure = store.attrs.get("structure") or {"kind": "ddpm", **store.attrs.get("model", {})}
    card = structure.get("card") or {}
    return {
        "location": str(store.loc), "format": store.attrs["format"], "schema_version": store.attrs["schema_version"],
        "product": store.product, "status": store.attrs["status"], "complete": store.complete and not missing_count,
        "samples": {"committed": sum(len(spec.shard_ids(k)) for k in committed), "total": spec.n, "manifest_rows": rows},
        "shards": {"committed": len(committed), "total": store.num_shards, "shard_size": spec.shard_size,
                   "missing": _missing(committed, store.num_shards), "missing_count": missing_count},
        "arrays": {name: {"shape": [spec.n, *a.sample_shape], "dtype": a.dtype, "pixel_nm": a.pixel_nm, "unit": a.unit,
                          "path": a.path} for name, a in store.arrays.items()},
        "pixel_nm": {"hr": spec.hr_pixel_nm, "lr": spec.lr_pixel_nm, "downsample": spec.degradation.get("downsample")},
        "structure": {"kind": spec.structure_kind, "id": spec.structure["id"], "model_path": spec.model_path,
                      "card": {k: card[k] for k in CARD_KEYS if k in card}},
        "sampler": spec.sampler, "seed": spec.seed, "degradation": spec.degradation,
        "observed": observed, "distinct": distinct,
        "size_bytes": sum(store.loc.sizes().values()), "created_at": store.attrs.get("created_at"),
        "completed_at": (store.attrs.get("totals") or {}).get("completed_at"),
        "summary": (store.attrs.get("card") or {}).get("summary"), "package_version": spec.package_version,
    }


def to_json(info: dict) -> str:
    return json.dumps(info, indent=2, default=str)


def _spec_range(value) -> str:
    if isinstance(value, dict):
        return f"{value['low']:g} - {value['high']:g}" + (" (log-uniform)" if value.get("log") else "")
    if isinstance(value, list):
        return f"{value[0]:g} - {value[1]:g}"
    return "" if value is None else (f"{value:g}" if isinstance(value, (int, float)) else str(value))


def _num(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _plain(*cells) -> list[Text]:
    """Cells as plain text: brackets in units ("[0, 1]") or paths are never taken for rich markup."""
    return [Text(str(c)) for c in cells]


def render(info: dict, console: Console) -> None:
    """The human summary: a header, then tables of contents, model and parameters."""
    s, sh = info["samples"], info["shards"]
    state = "complete" if info["complete"] else f"INCOMPLETE: {sh['missing_count']} shard(s) not committed"
    console.print(f"[bold]{escape(info['location'])}[/bold]  {info['format']} v{info['schema_version']}, {info['product']}, {state}")
    if info["summary"]:
        console.print(info["summary"], highlight=False)
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row(*_plain("samples", f"{s['committed']} committed of {s['total']} ({s['manifest_rows']} manifest rows)"))
    head.add_row(*_plain("shards", f"{sh['committed']} committed of {sh['total']}, {sh['shard_size']} samples each"
                 + (f"; missing {sh['missing'][:20]}" if sh["missing_count"] else "")))
    for name, a in info["arrays"].items():
        head.add_row(*_plain(name, f"{tuple(a['shape'])} {a['dtype']}, pixel {a['pixel_nm']:g} nm, {a['unit']}"))
    source, card = info["structure"], info["structure"]["card"]
    head.add_row(*_plain("structure", f"{source['kind']} {source['id'][:16]}  " + ", ".join(f"{k} {v}" for k, v in card.items())))
    sampler = info["sampler"]
    if sampler:
        head.add_row(*_plain("sampler", f"{sampler['kind']}, {sampler['steps']} steps" + "".join(
            f", {k} {v}" for k, v in sampler.items() if k not in ("kind", "steps"))))
    head.add_row(*_plain("run seed", str(info["seed"])))
    head.add_row(*_plain("size on disk", f"{info['size_bytes'] / 1e6:.2f} MB"))
    head.add_row(*_plain("created", f"{info['created_at']}" + (f", completed {info['completed_at']}" if info["completed_at"] else "")))
    head.add_row(*_plain("manifest values", "; ".join(f"{c} {', '.join(map(str, v))}" for c, v in info["distinct"].items())))
    console.print(head)
    table = Table(title="manifest columns: run-spec degradation range and observed min / max", title_justify="left")
    table.add_column("column", no_wrap=True)
    table.add_column("unit")
    table.add_column("run spec", overflow="fold")
    table.add_column("observed min", justify="right")
    table.add_column("observed max", justify="right")
    degradation = info["degradation"]
    for name, obs in info["observed"].items():
        table.add_row(*_plain(name, obs["unit"], _spec_range(degradation.get(name)), _num(obs["min"]), _num(obs["max"])))
    console.print(table)
