"""The Ray Data reader of a store: one read task per shard, the manifest filter, checked rows, torch batches;
on a real local Ray over the session's real store."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import flip_byte
from factory.raydata import read_store
from factory.store import Store


def test_read_store_yields_every_selected_sample_once_with_fields(ray_local, small_store):
    store = Store.open(small_store)
    ds = read_store(str(small_store), where="photons < 1000", fields=("photons", "shard"))
    rows = ds.take_all()
    want = store.manifest(["sample_id", "photons"]).to_pydict()
    selected = sorted(i for i, p in zip(want["sample_id"], want["photons"]) if p < 1000)
    assert sorted(r["sample_id"] for r in rows) == selected and 0 < len(selected) < 22
    for r in rows:
        i = int(r["sample_id"])
        np.testing.assert_array_equal(r["hr"], store.read_samples("hr", [i])[0])
        np.testing.assert_array_equal(r["lr"], store.read_samples("lr", [i])[0])
        assert r["shard"] == i // 4 and r["photons"] < 1000
    assert ds.materialize().num_blocks() == len({i // 4 for i in selected})  # one read task per shard with a selected sample
    batches = list(read_store(str(small_store), arrays=("hr",)).iter_torch_batches(batch_size=8))
    assert sum(len(b["hr"]) for b in batches) == 22 and tuple(batches[0]["hr"].shape[1:]) == (32, 32)


def test_a_damaged_shard_fails_its_read_task_with_the_stores_sentence(ray_local, small_store, tmp_path):
    copy = tmp_path / "c.zarr"
    shutil.copytree(small_store, copy)
    flip_byte(copy / "hr" / "0" / "c" / "2" / "0" / "0", 40)
    with pytest.raises(Exception, match=r"shard 2: .*factory repair"):
        read_store(str(copy), shards=(2,)).take_all()
    assert len(read_store(str(copy), shards=(1, 3)).take_all()) == 8
