"""Finalize: once every shard is committed, write totals and a short dataset card, consolidate metadata.

Only the driver calls this, after the last commit; a crash before it leaves the store
``planned`` with every part present, and the rerun just finalizes.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import zarr

from factory.errors import FactoryError
from factory.store import Store, now_utc

CARD_COLUMNS = ("photons", "background_photons", "psf_sigma_nm", "hr_mean", "lr_mean_adu")


def finalize(path: Path) -> int:
    """Mark the store complete (totals, card), consolidate its Zarr metadata; returns its size in bytes."""
    store = Store.open(path, writable=True)
    missing = sorted(set(range(store.num_shards)) - set(store.committed_shards()))
    if missing:
        raise FactoryError(f"{path} cannot be finalized: shards {missing[:10]} have no manifest part.")
    table = store.manifest(["sample_id", *CARD_COLUMNS])
    ids = table.column("sample_id").to_numpy()
    if len(ids) != store.n or not np.array_equal(ids, np.arange(store.n)):
        raise FactoryError(f"{path} cannot be finalized: the manifest lists {len(ids)} rows, not sample ids 0..{store.n - 1}.")
    totals = {"samples": store.n, "shards": store.num_shards, "stored_bytes": store.stored_bytes(),
              "completed_at": now_utc().isoformat()}
    store.set_attrs(status="complete", totals=totals, card=dataset_card(store, table))
    with warnings.catch_warnings():  # zarr notes that manifest/ is not a zarr node and that consolidation is an extension
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(str(path))
    return totals["stored_bytes"]


def dataset_card(store: Store, table) -> dict:
    """A summary sentence plus min / median / max of a few manifest columns (units as in the manifest schema)."""
    s = store.spec
    stats = {}
    for name in CARD_COLUMNS:
        values = table.column(name).to_numpy()
        stats[name] = {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}
    photons = stats["photons"]
    summary = (f"{s.n} synthetic LR/HR pairs: HR {s.hr_size}x{s.hr_size} px at {s.hr_pixel_nm:g} nm (normalized density) "
               f"sampled by model {s.model_id[:12]} with {s.sampler['kind']} in {s.sampler['steps']} steps, seed {s.seed}; "
               f"LR {s.lr_size}x{s.lr_size} px at {s.lr_pixel_nm:g} nm (ADU) from the optical model with "
               f"{photons['min']:.0f}-{photons['max']:.0f} signal photons (median {photons['median']:.0f}).")
    return {"summary": summary, "stats": stats}
