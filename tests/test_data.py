"""``factory.data``: the streaming dataset over the session's real store (``small_store``: 22 samples,
6 shards of 4 with the last holding 2), real DataLoader worker processes, DuckDB filters."""
from __future__ import annotations

import pickle
import shutil
from collections import Counter

import duckdb
import numpy as np
import pytest
import torch

from factory.data import DataConfig, Normalization, PairDataset, Upsample, make_loader, shuffle_buffer
from factory.errors import FactoryError
from factory.store import Store
from conftest import flip_byte, uncommit

N = 22


def ids_of(cfg: DataConfig, num_workers: int = 0, epoch: int = 0) -> list[int]:
    """Sample ids in the order one rank's DataLoader yields them."""
    loader = make_loader(cfg, batch_size=3, num_workers=num_workers)
    loader.dataset.set_epoch(epoch)
    return [i for _, _, f in loader for i in f["sample_id"].tolist()]


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (1, 2), (2, 0), (2, 1), (2, 2)])
def test_every_sample_exactly_once_per_epoch_over_ranks_and_workers(small_store, world_size, num_workers):
    seen, counts = [], []
    for rank in range(world_size):
        cfg = DataConfig(small_store, fields=("sample_id",), seed=5, shuffle_buffer=4, rank=rank, world_size=world_size)
        ids = ids_of(cfg, num_workers, epoch=1)
        seen += ids
        counts.append(len(ids))
    assert sorted(seen) == list(range(N)), Counter(seen).most_common(3)
    expected = PairDataset(DataConfig(small_store, seed=5, rank=0, world_size=world_size)).rank_counts(epoch=1)
    assert counts == expected and sum(expected) == N
    if world_size == 2:  # 3 whole shards per rank, one of them the short one: unequal counts
        assert sorted(expected) == [10, 12]


def test_order_is_reproducible_from_seed_and_epoch_and_changes_between_epochs(small_store):
    cfg = DataConfig(small_store, fields=("sample_id",), seed=3, shuffle_buffer=6)
    first, again = ids_of(cfg, epoch=0), ids_of(cfg, epoch=0)
    assert first == again and sorted(first) == list(range(N))
    assert ids_of(cfg, epoch=1) != first
    assert ids_of(DataConfig(small_store, fields=("sample_id",), seed=4, shuffle_buffer=6), epoch=0) != first
    assert ids_of(DataConfig(small_store, fields=("sample_id",), shuffle=False)) == list(range(N))


def test_pairs_match_the_store_and_fields_match_the_manifest(small_store):
    store = Store.open(small_store)
    ds = PairDataset(DataConfig(small_store, fields=("sample_id", "photons", "shard"), shuffle=False))
    manifest = {r["sample_id"]: r for r in store.manifest(["sample_id", "photons", "shard"]).to_pylist()}
    for lr, hr, f in ds:
        i = f["sample_id"]
        assert lr.dtype == hr.dtype == torch.float32 and lr.shape == (1, 8, 8) and hr.shape == (1, 32, 32)
        np.testing.assert_array_equal(hr[0].numpy(), store.hr[i])
        np.testing.assert_array_equal(lr[0].numpy(), store.lr[i].astype(np.float32))
        assert f["photons"] == manifest[i]["photons"] and f["shard"] == manifest[i]["shard"] == i // 4


def test_where_selects_what_duckdb_selects_and_bad_columns_are_one_sentence(small_store):
    glob = small_store / "manifest" / "part-*.parquet"  # the Parquet parts, read by DuckDB with no help from factory
    want = sorted(r[0] for r in duckdb.sql(f"SELECT sample_id FROM '{glob}' WHERE photons < 300").fetchall())
    assert 0 < len(want) < N
    ds = PairDataset(DataConfig(small_store, where="photons < 300", fields=("sample_id", "photons")))
    got = [(f["sample_id"], f["photons"]) for _, _, f in ds]
    assert sorted(i for i, _ in got) == want and all(p < 300 for _, p in got) and ds.num_samples == len(want)
    with pytest.raises(FactoryError, match=r"'brightness < 3'.*Binder Error.*brightness.*not found") as err:
        PairDataset(DataConfig(small_store, where="brightness < 3"))
    assert "\n" not in str(err.value)
    assert PairDataset(DataConfig(small_store, where="photons < 0")).num_samples == 0


def test_upsampling_and_normalizations(small_store):
    store = Store.open(small_store)
    cfg = DataConfig(small_store, shards=(1,), shuffle=False, fields=("sample_id", "offset_adu", "gain_e_per_adu", "em_gain"))
    near = list(PairDataset(DataConfig(**{**cfg.__dict__, "upsample": Upsample.nearest})))
    for lr, hr, f in near:  # nearest = each LR pixel repeated 4 x 4
        assert lr.shape == hr.shape == (1, 32, 32)
        np.testing.assert_array_equal(lr[0].numpy(), np.repeat(np.repeat(store.lr[f["sample_id"]], 4, 0), 4, 1).astype(np.float32))
    bilinear = list(PairDataset(DataConfig(**{**cfg.__dict__, "upsample": Upsample.bilinear})))
    assert bilinear[0][0].shape == (1, 32, 32) and not torch.equal(bilinear[0][0], near[0][0])
    assert abs(bilinear[0][0].mean() - near[0][0].mean()) < 0.05 * near[0][0].mean()
    for lr, _, f in PairDataset(DataConfig(**{**cfg.__dict__, "normalize": Normalization.camera})):
        raw = store.lr[f["sample_id"]].astype(np.float64)
        np.testing.assert_allclose(lr[0].numpy(), (raw - f["offset_adu"]) * f["gain_e_per_adu"] / f["em_gain"], rtol=1e-6)
    for lr, hr, _ in PairDataset(DataConfig(**{**cfg.__dict__, "normalize": Normalization.percentile,
                                                "normalize_hr": Normalization.percentile, "percentiles": (2.0, 98.0)})):
        for x in (lr, hr):
            lo, hi = np.percentile(x.numpy(), (2.0, 98.0))
            assert abs(lo) < 1e-5 and abs(hi - 1) < 1e-5


def test_only_committed_shards_are_read_and_an_explicit_split_is_honoured(small_store, tmp_path):
    copy = tmp_path / "partial.zarr"
    shutil.copytree(small_store, copy)
    uncommit(copy, [2])  # shard 2 (ids 8..11) no longer committed
    ids = sorted(f["sample_id"] for _, _, f in PairDataset(DataConfig(copy, fields=("sample_id",))))
    assert ids == [i for i in range(N) if not 8 <= i < 12]
    held_out = sorted(f["sample_id"] for _, _, f in PairDataset(DataConfig(copy, shards=(2, 5), fields=("sample_id",))))
    assert held_out == [20, 21]  # shard 2 is uncommitted: skipped
    with pytest.raises(FactoryError, match="out of range"):
        PairDataset(DataConfig(copy, shards=(6,)))


def test_the_store_is_opened_lazily_and_never_pickled_open(small_store):
    ds = PairDataset(DataConfig(small_store))
    assert ds._store is None
    next(iter(ds))
    assert ds._store is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store is None and len(pickle.dumps(ds)) < 10_000
    assert len(list(clone)) == N


def test_shuffle_buffer_is_a_bounded_permutation():
    rng = np.random.default_rng(0)
    out = list(shuffle_buffer(iter(range(100)), 8, rng))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert all(x < k + 8 for k, x in enumerate(out))  # the k-th output was among the first k + 8 inputs


def test_bad_configs_are_one_sentence(small_store, tmp_path):
    cases = [(DataConfig(tmp_path), "not a factory store"), (DataConfig(tmp_path / "nope.zarr"), "no such store"),
             (DataConfig(small_store, rank=2, world_size=2), "rank 2"),
             (DataConfig(small_store, percentiles=(99.0, 1.0)), "percentiles"),
             (DataConfig(small_store, normalize_hr=Normalization.camera), "normalize_hr"),
             (DataConfig(small_store, fields=("brightness",)), "no manifest column 'brightness'")]
    for cfg, message in cases:
        with pytest.raises(FactoryError, match=message):
            PairDataset(cfg)


def test_train_care_job_streams_the_store_and_writes_a_checkpoint(small_store, tmp_path):
    """The CARE job (jobs/train_care.py, a thin entry point over factory.care) end to end on CPU:
    3 steps, validation on the last shard, a factory-care checkpoint."""
    import importlib.util
    import math
    from pathlib import Path

    from factory.care import checkpoint

    path = Path(__file__).resolve().parents[1] / "jobs" / "train_care.py"
    spec = importlib.util.spec_from_file_location("train_care", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    threads = torch.get_num_threads()
    try:
        result = job.main(["--store", str(small_store), "--steps", "3", "--batch-size", "4", "--val-every", "2",
                           "--threads", "1", "--out", str(tmp_path / "care.safetensors")])
    finally:
        torch.set_num_threads(threads)
    assert result["step"] == 3 and math.isfinite(result["loss"]) and math.isfinite(result["metrics"]["psnr_db"])
    model = checkpoint.load(result["checkpoint"])
    assert model.training["store"] == str(Path(small_store).resolve()) and model.training["steps_done"] == 3
    assert model.net(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(FactoryError, match="--val-shards 6 must leave at least one"):
        job.main(["--store", str(small_store), "--val-shards", "6", "--out", str(tmp_path / "x.safetensors")])


def test_checked_reads_equal_zarr_and_refuse_damage_naming_store_shard_and_sample(small_store, tmp_path):
    store = Store.open(small_store)
    for k in range(store.num_shards):  # the last shard holds 2 of 4 inner chunks
        for name in ("hr", "lr"):
            got, want = store.read_shard(name, k), store.zarr_array(name)[store.shard_slice(k)]
            assert got.dtype == want.dtype and np.array_equal(got, want)
    copy = tmp_path / "c.zarr"
    shutil.copytree(small_store, copy)
    flip_byte(copy / "hr" / "0" / "c" / "1" / "0" / "0")
    loader = make_loader(DataConfig(copy, shuffle=False), batch_size=2)
    with pytest.raises(FactoryError, match=r"c\.zarr: shard 1: (hr data does not decode|sample \d+'s hr does not match)"):
        list(loader)
    (copy / "lr" / "0" / "c" / "3" / "0" / "0").unlink()
    with pytest.raises(FactoryError, match=r"shard 3: lr data file or an inner chunk is missing"):
        list(PairDataset(DataConfig(copy, shards=(3,))))
    got = [f["sample_id"] for _, _, f in PairDataset(DataConfig(copy, shards=(0, 2), shuffle=False, fields=("sample_id",)))]
    assert got == list(range(0, 4)) + list(range(8, 12))  # undamaged shards still stream
