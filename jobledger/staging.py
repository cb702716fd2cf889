"""Expected outputs on their way into the ledger: staged in TEMP tables of one connection, then copied.

Staging is the Python part (one row per output: ids, seeds, paths) and writes only this connection's
TEMP tables, so it takes no lock on the ledger and no other connection sees it. The copy is three
``INSERT … SELECT`` statements inside the writer's transaction. Registration stages a job's outputs,
builds and publishes its manifest from the staged rows (the registry's network round trips), and only
then takes the write lock, for the copy (see registration.create_job).

The staged tables have the manifest's shape (see registry.blobs): distinct parameter sets and task
templates, each numbered, and one row per output naming them by number, in ledger order.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from .manifest import ExpectedOutput, outputs_json

TABLES = {
    "staged_params": "idx INTEGER PRIMARY KEY, param_id TEXT NOT NULL, params_json TEXT NOT NULL, "
                     "param_key INTEGER",
    "staged_templates": "idx INTEGER PRIMARY KEY, bundle_ref TEXT NOT NULL, entrypoint TEXT NOT NULL, "
                        "outputs TEXT NOT NULL, template_id INTEGER",
    # seeds have no declared type, as in outputs: values >= 2**63 stay text
    "staged_outputs": "idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, task_id TEXT NOT NULL, "
                      "p INTEGER NOT NULL, t INTEGER NOT NULL, task_seed, run_seed, path TEXT NOT NULL",
}

# The staged outputs as the manifest lists them, in ledger order.
MANIFEST_ROWS_SQL = (
    "SELECT s.kind, s.task_id, p.param_id, p.params_json, t.bundle_ref, t.entrypoint, t.outputs, "
    "s.task_seed, s.run_seed, s.path FROM temp.staged_outputs s JOIN temp.staged_params p ON p.idx = s.p "
    "JOIN temp.staged_templates t ON t.idx = s.t ORDER BY s.idx")


@contextmanager
def temp_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction for writes to TEMP tables only (staged rows, a store listing): a deferred BEGIN, which
    takes no lock on the ledger (nothing when a transaction is open already); rolled back on any exception."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def db_seed(seed: int | None):
    """SQLite integers are signed 64-bit: larger seeds are stored as their decimal text."""
    return str(seed) if seed is not None and seed >= 2**63 else seed


PROGRESS_EVERY = 1000


def stage(conn: sqlite3.Connection, rows: Iterable[ExpectedOutput], params: Mapping[str, str], *,
          progress: Callable[[int], None] | None = None) -> int:
    """Stage expected outputs (replacing what was staged); ``params`` maps each param_id they use to its
    canonical params JSON; ``progress(n)`` is told every PROGRESS_EVERY outputs. Returns their number."""
    drop(conn)
    for name, columns in TABLES.items():
        conn.execute(f"CREATE TEMP TABLE {name} ({columns})")
    param_index = {pid: i for i, pid in enumerate(params)}
    templates: dict[tuple, int] = {}
    count = 0

    def values() -> Iterator[tuple]:
        nonlocal count
        for row in rows:
            key = (row.bundle_ref, row.entrypoint, row.outputs)
            t = templates.get(key)
            if t is None:
                t = templates[key] = len(templates)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            yield (row.kind, row.task_id, param_index[row.param_id], t, db_seed(row.task_seed),
                   db_seed(row.run_seed), row.path)

    with temp_transaction(conn):
        conn.executemany("INSERT INTO temp.staged_outputs (kind, task_id, p, t, task_seed, run_seed, path) "
                         "VALUES (?,?,?,?,?,?,?)", values())
        conn.executemany("INSERT INTO temp.staged_params (idx, param_id, params_json) VALUES (?,?,?)",
                         ((i, pid, text) for i, (pid, text) in enumerate(params.items())))
        conn.executemany("INSERT INTO temp.staged_templates (idx, bundle_ref, entrypoint, outputs) "
                         "VALUES (?,?,?,?)",
                         ((i, bundle, entrypoint, outputs_json(names))
                          for (bundle, entrypoint, names), i in templates.items()))
    if progress is not None:
        progress(count % PROGRESS_EVERY)
    return count


def copy(conn: sqlite3.Connection, job_id: str) -> int:
    """Insert the staged outputs as ``job_id``'s (parameter sets and templates shared with other jobs are
    found, not repeated). Call inside the writer's transaction. Returns the number of outputs."""
    conn.execute("INSERT OR IGNORE INTO params (param_id, params_json) "
                 "SELECT param_id, params_json FROM temp.staged_params ORDER BY idx")
    conn.execute("UPDATE temp.staged_params SET param_key = "
                 "(SELECT param_key FROM params p WHERE p.param_id = staged_params.param_id)")
    conn.execute("INSERT OR IGNORE INTO task_templates (bundle_ref, entrypoint, outputs) "
                 "SELECT bundle_ref, entrypoint, outputs FROM temp.staged_templates ORDER BY idx")
    conn.execute("UPDATE temp.staged_templates SET template_id = (SELECT template_id FROM task_templates t "
                 "WHERE t.bundle_ref = staged_templates.bundle_ref "
                 "AND t.entrypoint = staged_templates.entrypoint AND t.outputs = staged_templates.outputs)")
    return conn.execute(
        "INSERT INTO manifest (job_id, kind, task_id, param_key, template_id, task_seed, run_seed, path) "
        "SELECT ?, s.kind, s.task_id, p.param_key, t.template_id, s.task_seed, s.run_seed, s.path "
        "FROM temp.staged_outputs s JOIN temp.staged_params p ON p.idx = s.p "
        "JOIN temp.staged_templates t ON t.idx = s.t ORDER BY s.idx", (job_id,)).rowcount


def manifest_rows(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """(kind, task_id, param_id, params_json, bundle_ref, entrypoint, outputs, task_seed, run_seed, path)
    per staged output, in ledger order."""
    return conn.execute(MANIFEST_ROWS_SQL)


def paths(conn: sqlite3.Connection) -> Iterator[str]:
    return (r[0] for r in conn.execute("SELECT path FROM temp.staged_outputs ORDER BY idx"))


def drop(conn: sqlite3.Connection) -> None:
    for name in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS temp.{name}")


__all__ = ["stage", "copy", "manifest_rows", "paths", "drop", "db_seed"]
