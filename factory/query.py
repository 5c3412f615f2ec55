"""SQL over a store: DuckDB views of the manifest (and the audit table), used by ``factory query``,
the dataset's ``where`` filter and every ``--where`` option.

    con = connect(store)                   # views: manifest (committed parts only), audit (when present)
    con.sql("SELECT shard, avg(photons) FROM manifest GROUP BY shard")
    sample_ids_where(store, "photons < 300")   # -> sorted int64 sample ids

The ``manifest`` view reads exactly the parts of the committed shards (the parts that
exist), so a half-written store shows what is committed. ``audit`` is
``STORE/audit/audit.parquet`` written by ``factory audit`` (one row per audited sample:
``sample_id, max_ncc, best_patch, ...``), joinable on ``sample_id``.

DuckDB errors become one FactoryError sentence carrying DuckDB's own message (its first
line, e.g. ``Binder Error: Referenced column "foo" not found in FROM clause!``).
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from factory.errors import FactoryError
from factory.pipeline import schemas
from factory.store import Store

AUDIT_DIR = "audit"
AUDIT_FILE = "audit.parquet"


def open_store(path: str | Path) -> Store:
    """Open a store for reading (one FactoryError sentence when it is not one, or from a newer schema version)."""
    path = Path(path)
    if not path.exists():
        raise FactoryError(f"{path}: no such store (folder not found).")
    return Store.open(path)


def audit_path(store: Store) -> Path:
    return store.path / AUDIT_DIR / AUDIT_FILE


def _sql_string(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with view ``manifest`` (and ``audit`` when the store has one)."""
    con = duckdb.connect()
    parts = [str(store.part_path(k)) for k in store.committed_shards()]
    if parts:
        files = ", ".join(_sql_string(p) for p in parts)
        con.execute(f"CREATE VIEW manifest AS SELECT * FROM read_parquet([{files}])")
    else:  # nothing committed yet: an empty table with the manifest's columns
        con.register("_empty_manifest", schemas.manifest_schema().empty_table())
        con.execute("CREATE VIEW manifest AS SELECT * FROM _empty_manifest")
    if audit_path(store).is_file():
        con.execute(f"CREATE VIEW audit AS SELECT * FROM read_parquet({_sql_string(audit_path(store))})")
    return con


def duckdb_message(exc: duckdb.Error) -> str:
    """DuckDB's message as one line (its source-position lines ``LINE 1: ...`` and ``^`` dropped)."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept).rstrip(".") or type(exc).__name__


def run(store: Store, sql: str) -> pa.Table:
    """Run a SELECT (or any read-only statement) over the store's views; the result as an Arrow table."""
    if not sql.strip():
        raise FactoryError("the query is empty; give a SQL statement such as \"SELECT count(*) FROM manifest\".")
    con = connect(store)
    try:
        result = con.sql(sql)
        if result is None:
            raise FactoryError(f"the statement {sql!r} returns no rows; give a SELECT over manifest (or audit).")
        return result.to_arrow_table()
    except duckdb.Error as exc:
        raise FactoryError(f"the query failed: {duckdb_message(exc)}.") from None
    finally:
        con.close()


def sample_ids_where(store: Store, where: str | None) -> np.ndarray:
    """Sorted sample ids of the committed samples matching a SQL condition on manifest columns
    (``where=None``: all committed samples). One FactoryError sentence when DuckDB rejects it."""
    if where is None or not where.strip():
        return np.sort(store.manifest(["sample_id"]).column("sample_id").to_numpy())
    con = connect(store)
    try:
        table = con.sql(f"SELECT sample_id FROM manifest WHERE ({where}) ORDER BY sample_id").to_arrow_table()
    except duckdb.Error as exc:
        raise FactoryError(f"the filter {where!r} failed: {duckdb_message(exc)}.") from None
    finally:
        con.close()
    return table.column("sample_id").to_numpy().astype(np.int64)
