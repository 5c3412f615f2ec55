"""``factory query`` through the real CLI over the session's real store: table, CSV and Parquet
output, limits, and bad SQL as one sentence with exit 2."""
from __future__ import annotations

import csv
import io

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory import query
from factory.cli import app
from factory.errors import FactoryError
from factory.store import Store

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["query", *map(str, args)])


def test_table_output_agrees_with_duckdb_on_the_parquet_files(small_store):
    glob = Store.open(small_store).manifest_glob
    want = duckdb.sql(f"SELECT count(*) FROM '{glob}' WHERE photons < 300").fetchall()[0][0]
    r = run(small_store, "SELECT count(*) AS n FROM manifest WHERE photons < 300")
    assert r.exit_code == 0, r.output
    assert "n" in r.stdout and f" {want} " in r.stdout
    r = run(small_store, "SELECT shard, count(*) AS n FROM manifest GROUP BY shard ORDER BY shard", "--limit", 2)
    assert r.exit_code == 0 and "(6 rows, first 2 shown" in r.output and "│ 1 " in r.stdout and "│ 2 " not in r.stdout


def test_wide_results_print_one_record_per_block(small_store):
    r = run(small_store, "SELECT * FROM manifest WHERE sample_id = 3")
    assert r.exit_code == 0, r.output
    assert "row 1" in r.stdout and "psf_sigma_nm" in r.stdout and "hr_checksum" in r.stdout


def test_csv_to_stdout_and_file_and_parquet_to_file(small_store, tmp_path):
    sql = "SELECT sample_id, photons FROM manifest ORDER BY sample_id"
    r = run(small_store, sql, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [int(row["sample_id"]) for row in rows] == list(range(22))
    expected = Store.open(small_store).manifest(["photons"]).column("photons").to_pylist()
    assert [float(row["photons"]) for row in rows] == pytest.approx(expected)
    assert run(small_store, sql, "--format", "csv", "--out", tmp_path / "q.csv").exit_code == 0
    assert (tmp_path / "q.csv").read_text().startswith('"sample_id","photons"')
    r = run(small_store, sql, "--format", "parquet", "--out", tmp_path / "q.parquet")
    assert r.exit_code == 0 and pq.read_table(tmp_path / "q.parquet").column("photons").to_pylist() == pytest.approx(expected)
    r = run(small_store, sql, "--format", "parquet", "--out", tmp_path / "q.parquet")
    assert r.exit_code == 2 and "--overwrite" in r.output


@pytest.mark.parametrize("args,message", [
    (["SELECT brightness FROM manifest"], 'Binder Error: Referenced column "brightness" not found'),
    (["SELEC 1"], "Parser Error"),
    (["SELECT * FROM audit"], "audit"),  # no audit yet: DuckDB says the table does not exist
    (["   "], "the query is empty"),
    (["SELECT 1", "--format", "parquet"], "--format parquet needs --out"),
])
def test_bad_queries_are_one_sentence_exit_2(small_store, args, message):
    r = run(small_store, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert r.output.count("error:") == 1


def test_an_unfinished_store_shows_only_committed_parts(small_store, tmp_path):
    import shutil

    copy = tmp_path / "partial.zarr"
    shutil.copytree(small_store, copy)
    store = Store.open(copy)
    for k in range(store.num_shards):
        store.part_path(k).unlink()
    assert query.run(Store.open(copy), "SELECT count(*) AS n FROM manifest").column("n").to_pylist() == [0]
    assert len(query.sample_ids_where(Store.open(copy), "photons > 0")) == 0
    with pytest.raises(FactoryError, match="no such store"):
        query.open_store(tmp_path / "missing.zarr")
