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
from conftest import uncommit

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["query", *map(str, args)])


def test_table_output_agrees_with_duckdb_on_the_parquet_files(small_store):
    glob = small_store / "manifest" / "part-*.parquet"  # the parts, read by DuckDB with no help from factory
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
    uncommit(copy, range(Store.open(copy).num_shards))
    assert query.run(Store.open(copy), "SELECT count(*) AS n FROM manifest").column("n").to_pylist() == [0]
    assert len(query.sample_ids_where(Store.open(copy), "photons > 0")) == 0
    with pytest.raises(FactoryError, match="no such store"):
        query.open_store(tmp_path / "missing.zarr")


def test_queries_are_read_only_and_see_only_the_stores_tables(small_store, tmp_path):
    """COPY, ATTACH, CREATE, extension installs and reading other files are refused; nothing is written."""
    target = tmp_path / "x.csv"
    attacks = [f"COPY (SELECT 42) TO '{target}'", f"ATTACH '{tmp_path / 'db.duckdb'}'", "CREATE TABLE t AS SELECT 1",
               "SELECT * FROM read_csv('/etc/passwd')", "INSTALL httpfs",
               f"SELECT * FROM '{small_store / 'manifest' / 'part-000000.parquet'}'",
               "SELECT 1; SELECT 2", "SET enable_external_access = true"]
    before = sorted(p.name for p in (small_store / "manifest").iterdir())
    for sql in attacks:
        r = run(small_store, sql)
        assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output, (sql, r.output)
    assert not target.exists() and not (tmp_path / "db.duckdb").exists()
    assert sorted(p.name for p in (small_store / "manifest").iterdir()) == before


def test_a_where_is_one_expression_not_an_injection(small_store, tmp_path):
    store = Store.open(small_store)
    evil = f"1=1); COPY (SELECT 42) TO '{tmp_path / 'x.csv'}'; SELECT sample_id FROM manifest WHERE (1=1"
    with pytest.raises(FactoryError, match="must be one SELECT statement"):
        query.sample_ids_where(store, evil)
    with pytest.raises(FactoryError, match="file system operations are disabled"):
        query.sample_ids_where(store, "sample_id IN (SELECT 1 FROM read_csv('/etc/passwd'))")
    assert not (tmp_path / "x.csv").exists()
    from factory.data import DataConfig, PairDataset

    with pytest.raises(FactoryError, match="must be one SELECT statement"):
        PairDataset(DataConfig(small_store, where=evil))
    assert len(query.sample_ids_where(store, "photons > 0 AND shard IN (1, 2)")) == 8
