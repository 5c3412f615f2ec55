"""Read-only SQL over a store: DuckDB views of the manifest (and the audit and emitter tables), used by
``factory query``, the dataset's ``where`` filter and every ``--where`` option.

    con = connect(store)                        # tables: manifest, audit (when present), emitters (smlm)
    run(store, "SELECT shard, avg(photons) FROM manifest GROUP BY shard")
    sample_ids_where(store, "photons < 300")    # -> sorted int64 sample ids

Queries see the store's tables and nothing else. The tables are Arrow datasets read through the
store's location (the compacted manifest of a complete store is one read, on S3 too; no DuckDB
extension is ever installed or loaded), registered on an in-memory DuckDB connection opened with
``enable_external_access = false``: COPY ... TO, ATTACH, INSTALL, read_csv('/etc/passwd') and the
like are refused by DuckDB itself. A query must be exactly one SELECT (or WITH ... SELECT) statement;
a ``where`` must be one expression (wrapped in ``SELECT sample_id FROM manifest WHERE (...)`` and
parsed: anything that is not one SELECT is refused before it runs).

DuckDB errors become one FactoryError sentence carrying DuckDB's own message (its first line, e.g.
``Binder Error: Referenced column "foo" not found in FROM clause!``).
"""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from factory.errors import FactoryError
from factory.store import Store, layout

AUDIT_SCHEMA_NOTE = "audit/audit.parquet written by `factory audit` (one row per audited sample), joined on sample_id"
ALLOWED = (duckdb.StatementType.SELECT,)


def open_store(location) -> Store:
    """Open a store for reading (one FactoryError sentence when it is not one)."""
    return Store.open(str(location))


def tables(store: Store) -> dict[str, object]:
    """The Arrow tables/datasets a query may see, by name."""
    out: dict[str, object] = {"manifest": store.manifest()}
    audit = store.read_table(layout.AUDIT_FILE, "the audit table")
    if audit is not None:
        out["audit"] = audit
    if store.product == "smlm":
        out["emitters"] = store.emitters_dataset()
    return out


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory, locked-down DuckDB connection with the store's tables registered (see the module docstring)."""
    con = duckdb.connect(":memory:", config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    for name, table in tables(store).items():
        con.register(name, table)
    con.execute("SET lock_configuration = true")
    return con


def duckdb_message(exc: duckdb.Error) -> str:
    """DuckDB's message as one line (its source-position lines ``LINE 1: ...`` and ``^`` dropped)."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept).rstrip(".") or type(exc).__name__


def _one_select(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise FactoryError(f"{what} is not valid SQL: {duckdb_message(exc)}.") from None
    if len(statements) != 1 or statements[0].type not in ALLOWED:
        kinds = ", ".join(s.type.name for s in statements) or "nothing"
        raise FactoryError(f"{what} must be one SELECT statement (queries are read-only); got {kinds}.")


def run(store: Store, sql: str) -> pa.Table:
    """Run one SELECT over the store's tables; the result as an Arrow table."""
    if not sql.strip():
        raise FactoryError("the query is empty; give a SQL statement such as \"SELECT count(*) FROM manifest\".")
    con = connect(store)
    try:
        _one_select(con, sql, "the query")
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise FactoryError(f"the query failed: {duckdb_message(exc)}.") from None
    finally:
        con.close()


def sample_ids_where(store: Store, where: str | None) -> np.ndarray:
    """Sorted sample ids of the committed samples matching a SQL condition on manifest columns
    (``where=None``: all committed samples). One FactoryError sentence when DuckDB rejects it."""
    if where is None or not where.strip():
        return np.sort(store.manifest(["sample_id"]).column("sample_id").to_numpy()).astype(np.int64)
    con = connect(store)
    sql = f"SELECT sample_id FROM manifest WHERE ({where}) ORDER BY sample_id"
    try:
        _one_select(con, sql, f"the filter {where!r}")
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise FactoryError(f"the filter {where!r} failed: {duckdb_message(exc)}.") from None
    finally:
        con.close()
    return table.column("sample_id").to_numpy().astype(np.int64)
