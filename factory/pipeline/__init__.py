"""``factory generate`` on Ray: plan -> sample -> degrade + commit -> finalize.

    spec.py     RunSpec: the one typed, persisted config that determines a store's bytes
    schemas.py  load and validate the versioned JSON schemas under ``schemas/``
    plan.py     resolve a GenerateConfig into a RunSpec; create or resume the store
    actors.py   SamplerActor: holds the model once, turns a shard's ids into HR images
    tasks.py    degrade_and_commit: a CPU task that degrades a shard and commits it
    driver.py   orchestration: bounded in-flight shards, re-queue on actor loss, failures by shard id
    finalize.py totals and dataset card in the group attrs, consolidated metadata

The store layout and read API live in :mod:`factory.store`.
"""
