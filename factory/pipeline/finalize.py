"""Finalize: once every shard is committed, the dataset card, then the store's own finalize
(compacted manifest, totals, consolidated metadata: :func:`factory.store.writer.finalize`).

Only the lease holder calls this, after the last commit; a crash before it leaves the store
``planned`` with every part present, and the rerun just finalizes.
"""
from __future__ import annotations

import numpy as np

from factory.store import Store, writer

CARD_COLUMNS = {"pairs": ("photons", "background_photons", "psf_sigma_nm", "hr_mean", "lr_mean_adu")}


def finalize(store: Store) -> int:
    """Mark the store complete; returns its stored size in bytes."""
    table = store.manifest(["sample_id", *CARD_COLUMNS.get(store.product, ())])
    return writer.finalize(store, dataset_card(store, table))


def dataset_card(store: Store, table) -> dict:
    """A summary sentence plus min / median / max of a few manifest columns (units as in the manifest schema)."""
    s = store.spec
    stats = {}
    for name in CARD_COLUMNS.get(store.product, ()):
        values = table.column(name).to_numpy()
        stats[name] = {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}
    source = s.structure
    made = {"ddpm": lambda: f"sampled by model {source['model_id'][:12]} with {source['sampler']['kind']} in "
                            f"{source['sampler']['steps']} steps",
            "simulate": lambda: "from the mathematical microtubule model",
            "images": lambda: f"cut from {len(source.get('files', []))} user image file(s)"}[source["kind"]]()
    if store.product == "pairs":
        photons = stats["photons"]
        what = (f"{s.n} synthetic LR/HR pairs: HR {s.hr_size}x{s.hr_size} px at {s.hr_pixel_nm:g} nm (normalized density) "
                f"{made}, seed {s.seed}; LR {s.lr_size}x{s.lr_size} px at {s.lr_pixel_nm:g} nm (ADU) from the optical model "
                f"with {photons['min']:.0f}-{photons['max']:.0f} signal photons (median {photons['median']:.0f}).")
    else:
        what = (f"{s.n} synthetic SMLM samples of {s.frames} frames: HR density {s.hr_size}x{s.hr_size} px at {s.hr_pixel_nm:g} nm "
                f"{made}, seed {s.seed}; frames {s.lr_size}x{s.lr_size} px at {s.lr_pixel_nm:g} nm (ADU), KDE targets on the HR grid.")
    return {"summary": what, "stats": stats}
