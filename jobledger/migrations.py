"""Ordered, named schema migrations (in the manner of simonw's ``llm``): one function per step,
applied in order, each recorded by name in the ``_migrations`` table.

``schema.sql`` is the current definition: a new ledger is created from it and every step is
recorded as applied. An existing ledger gets only the steps it has not had, in one transaction,
then the views are re-created from ``schema.sql``. ``PRAGMA user_version`` mirrors the number
of steps so that opening an up-to-date ledger costs one PRAGMA.

Ledgers made before this module existed carry ``user_version = 1`` and no ``_migrations`` table:
they hold the baseline schema (the first ``schema.sql``, commit 5683652) and get every step.

Rules for a new step: append a function decorated with ``@migration``, never edit or reorder a
landed one, change ``schema.sql`` to the result, and the test that compares a migrated ledger
with a fresh one keeps both in step.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from importlib import resources

BASELINE = "0001_baseline"  # the tables and indexes of the first schema.sql (user_version 1)

Step = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Step]] = []


MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, "
                    "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))")


class MigrationError(Exception):
    """The file cannot be brought to this version's schema (the Ledger turns it into a LedgerError)."""


def migration(fn: Step) -> Step:
    """Register a step; its name is the function's without the leading 'm' (``0002_…``)."""
    MIGRATIONS.append((fn.__name__.removeprefix("m"), fn))
    return fn


def names() -> list[str]:
    return [BASELINE] + [name for name, _ in MIGRATIONS]


def schema_sql() -> str:
    return resources.files("jobledger").joinpath("schema.sql").read_text(encoding="utf-8")


def schema_statements() -> list[str]:
    """The statements of schema.sql, split where sqlite3 says a statement is complete."""
    statements, buffer = [], ""
    for line in schema_sql().splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s.strip(" \n;")]


def schema_version() -> int:
    """The ``user_version`` of a ledger with every step applied."""
    return len(names())


def migrate(conn: sqlite3.Connection, schema_statements: list[str]) -> list[str]:
    """Bring the database behind ``conn`` to the current schema; returns the steps applied.

    The caller holds a write transaction and has turned foreign keys OFF (a table rebuild drops
    and re-creates a referenced table; with them on, the drop would cascade-delete rows).
    ``schema_statements`` are the statements of schema.sql: a new database is made from them,
    an existing one gets its views re-created from them after the pending steps.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name NOT LIKE 'sqlite_%'")}
    if not tables:
        for statement in schema_statements:
            conn.execute(statement)
        conn.execute(MIGRATIONS_TABLE)
        conn.executemany("INSERT INTO _migrations (name) VALUES (?)", [(name,) for name in names()])
        conn.execute(f"PRAGMA user_version = {schema_version()}")
        return names()
    if version == 0:
        raise MigrationError("it has tables but no jobledger schema version")
    conn.execute(MIGRATIONS_TABLE)
    applied = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
    if not applied:
        # made before migrations existed
        conn.execute("INSERT INTO _migrations (name) VALUES (?)", (BASELINE,))
        applied = {BASELINE}
    unknown = applied - set(names())
    if unknown:
        raise MigrationError("it has schema steps this jobledger does not know "
                             f"({', '.join(sorted(unknown))})")
    pending = [(name, step) for name, step in MIGRATIONS if name not in applied]
    # Views name the tables a step may rebuild; schema.sql re-creates them below.
    for (view,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall():
        conn.execute(f'DROP VIEW "{view}"')
    for name, step in pending:
        step(conn)
        conn.execute("INSERT INTO _migrations (name) VALUES (?)", (name,))
    for statement in schema_statements:  # tables and indexes exist (IF NOT EXISTS); views come back
        conn.execute(statement)
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise MigrationError(f"{len(broken)} row(s) break a foreign key after the upgrade (first in table "
                             f"{broken[0][0]!r})")
    conn.execute(f"PRAGMA user_version = {schema_version()}")
    return [name for name, _ in pending]


def rebuild_table(conn: sqlite3.Connection, table: str, create_sql: str, indexes: list[str]) -> None:
    """Replace ``table`` by one made with ``create_sql`` (which must create ``<table>_new``), keeping every
    row: SQLite's documented way to change a constraint or drop a column. Columns the new table adds
    take their defaults; columns it lacks are dropped. The caller runs inside a transaction with
    foreign keys OFF and views dropped, and checks foreign keys after."""
    conn.execute(create_sql)
    new_columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table}_new)")}
    columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({table})")
                        if row[1] in new_columns)
    conn.execute(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    for statement in indexes:
        conn.execute(statement)


# The outputs table as steps 2 and 5 rebuild it: they differ only in the state's default and step 5's
# added column. Frozen like the steps themselves: a later change to the table is a new step.
OUTPUTS_STATES = "('missing','verified','errored','incomplete','unchecked','stale')"
# What an expected output is, the same in the outputs table (steps 2, 5) and the manifest (step 6).
OUTPUT_COLUMNS = """\
            output_id          INTEGER PRIMARY KEY,
            job_id             TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
            kind               TEXT NOT NULL CHECK (kind IN ('simulation','aggregation')),
            task_id            TEXT NOT NULL,
            param_key          INTEGER NOT NULL REFERENCES params(param_key),
            template_id        INTEGER NOT NULL REFERENCES task_templates(template_id),
            task_seed,
            run_seed,
            path               TEXT NOT NULL,
"""


def _rebuild_outputs(conn: sqlite3.Connection, state_default: str, added_columns: str = "") -> None:
    rebuild_table(conn, "outputs", f"""
        CREATE TABLE outputs_new (
{OUTPUT_COLUMNS}            state              TEXT NOT NULL DEFAULT '{state_default}'
                                   CHECK (state IN {OUTPUTS_STATES}),
            detail             TEXT,
            first_verified_run INTEGER REFERENCES validation_runs(run_id),
            last_seen_run      INTEGER REFERENCES validation_runs(run_id),
            state_run          INTEGER REFERENCES validation_runs(run_id){added_columns}
        )""", ["CREATE INDEX IF NOT EXISTS outputs_job_state ON outputs(job_id, state)"])


# ---------------------------------------------------------------- the steps, oldest first


@migration
def m0002_output_states_unchecked_stale(conn: sqlite3.Connection) -> None:
    """outputs.state may also be 'unchecked' (registered, never looked at) and 'stale' (an aggregation
    over other inputs than its param set's current replicates: see states.py, jobledger.aggregations);
    the default stays 'missing'. (The step's SQL is frozen; this docstring once gave 'stale' a meaning
    the code never had.)"""
    _rebuild_outputs(conn, "missing")


@migration
def m0003_unverified_outputs_output_id(conn: sqlite3.Connection) -> None:
    """The ``unverified_outputs`` view gains ``output_id``, so ``missing`` lists outputs in
    registration order straight from the view. No table changes: views are dropped before the
    steps and re-created from schema.sql after them; this step makes existing ledgers do that."""


@migration
def m0004_stale_aggregation_counts(conn: sqlite3.Connection) -> None:
    """A validation run counts its stale aggregations (jobledger.aggregations), and the ``job_summary``
    view gains ``stale`` (re-created from schema.sql after the steps)."""
    conn.execute("ALTER TABLE validation_runs ADD COLUMN stale INTEGER NOT NULL DEFAULT 0")


@migration
def m0005_outputs_unchecked_until_observed(conn: sqlite3.Connection) -> None:
    """An output no validation has observed is 'unchecked', not 'missing': the default becomes
    'unchecked', and the outputs of jobs that no validation has run on are marked so (an output
    observed missing keeps 'missing'). ``given_up_after`` records that resume stopped retrying an
    output after that many errored attempts (NULL: not given up)."""
    _rebuild_outputs(conn, "unchecked", ",\n            given_up_after     INTEGER")
    conn.execute("UPDATE outputs SET state = 'unchecked' WHERE state = 'missing' AND state_run IS NULL "
                 "AND job_id NOT IN (SELECT job_id FROM validation_runs)")


@migration
def m0006_manifest_and_output_states(conn: sqlite3.Connection) -> None:
    """What validation observes moves out of the wide expected-output rows into the narrow
    ``output_states`` (a row once a validation has looked at the output: no row is 'unchecked'), so
    that recording a validation writes only the states that changed instead of rewriting every row's
    page. The rows become ``manifest``; ``outputs`` becomes a view with the table's columns."""
    conn.execute("ALTER TABLE outputs RENAME TO manifest")  # output_events' foreign key follows the rename
    conn.execute("""
        CREATE TABLE output_states (
            output_id          INTEGER PRIMARY KEY REFERENCES manifest(output_id) ON DELETE CASCADE,
            state              TEXT NOT NULL CHECK (state IN
                                   ('missing','verified','errored','incomplete','unchecked','stale')),
            detail             TEXT,
            first_verified_run INTEGER REFERENCES validation_runs(run_id),
            last_seen_run      INTEGER REFERENCES validation_runs(run_id),
            state_run          INTEGER REFERENCES validation_runs(run_id)
        )""")
    conn.execute("""
        INSERT INTO output_states (output_id, state, detail, first_verified_run, last_seen_run, state_run)
        SELECT output_id, state, detail, first_verified_run, last_seen_run, state_run FROM manifest
        WHERE state <> 'unchecked' ORDER BY output_id""")
    rebuild_table(conn, "manifest", f"""
        CREATE TABLE manifest_new (
{OUTPUT_COLUMNS}            given_up_after     INTEGER
        )""", ["CREATE INDEX IF NOT EXISTS manifest_job ON manifest(job_id)",
               "CREATE INDEX IF NOT EXISTS manifest_plan ON manifest(job_id, template_id, param_key)"])


@migration
def m0007_job_specs(conn: sqlite3.Connection) -> None:
    """The spec moves from the jobs row, which every status change and validation rewrites whole, to
    ``job_specs``: a big job's compressed spec is megabytes."""
    conn.execute("""
        CREATE TABLE job_specs (
            job_id  TEXT PRIMARY KEY REFERENCES jobs(job_id) ON DELETE CASCADE,
            spec_gz BLOB NOT NULL
        )""")
    conn.execute("INSERT INTO job_specs (job_id, spec_gz) SELECT job_id, spec_gz FROM jobs "
                 "WHERE spec_gz IS NOT NULL")
    conn.execute("ALTER TABLE jobs DROP COLUMN spec_gz")
