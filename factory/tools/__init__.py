"""Store tools behind ``factory info | verify | preview | export``, one concept per module.

    info.py     what a store holds: counts, shapes, pixel sizes, model, run spec, observed manifest ranges
    verify.py   checksums of every committed sample, missing / duplicate / uncommitted shards, stray files
    preview.py  a PNG montage of LR/HR pairs with a scale bar
    export.py   TIFF stacks for Fiji (with pixel size) and CSBDeep training ``.npz``

Each reads a store through :mod:`factory.store` and selects samples with :mod:`factory.query`.
"""
