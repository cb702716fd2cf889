"""Ordered, named migrations: ledgers made by earlier versions open, keep every row, and answer
through the views; a failed upgrade changes nothing; a migrated ledger has the new ledger's schema."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobledger import migrations
from jobledger.ledger import SCHEMA_VERSION, Ledger, LedgerError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TABLES = ("jobs", "params", "task_templates", "outputs", "transitions", "validation_runs", "output_events",
          "unexpected_paths")


def legacy_ledger(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.execute("PRAGMA user_version = 1")  # what the ledger of that version recorded
    conn.commit()
    conn.close()
    return path


def first_schema_ledger(path: Path) -> Path:
    """A ledger made from the first landed schema.sql, with a row in every table."""
    legacy_ledger(path, (FIXTURES / "schema_5683652.sql").read_text())
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript("""
        INSERT INTO jobs (job_id, status, store_url, created_at, updated_at) VALUES
            ('job-00000001', 'partial', '/s', '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'),
            ('job-00000001-r1', 'running', '/s', '2026-01-03T00:00:00Z', '2026-01-03T00:00:00Z');
        UPDATE jobs SET parent_job_id = 'job-00000001' WHERE job_id = 'job-00000001-r1';
        INSERT INTO params VALUES (1, 'aaaa', '{"x":1}');
        INSERT INTO task_templates VALUES (1, 'b', 'm/s', '["o"]');
        INSERT INTO validation_runs (run_id, job_id, started_at, expected, verified, missing, outcome)
            VALUES (1, 'job-00000001', '2026-01-02T00:00:00Z', 3, 2, 1, 'partial');
        INSERT INTO outputs (output_id, job_id, kind, task_id, param_key, template_id, task_seed, run_seed, path,
                             state, first_verified_run, last_seen_run, state_run) VALUES
            (1, 'job-00000001', 'simulation', 't1', 1, 1, 1, 1, 'p/1', 'verified', 1, 1, 1),
            (2, 'job-00000001', 'simulation', 't2', 1, 1, 2, 2, 'p/2', 'verified', 1, 1, 1),
            (3, 'job-00000001', 'simulation', 't3', 1, 1, 3, '18446744073709551615', 'p/3', 'missing', NULL, NULL, 1),
            (4, 'job-00000001-r1', 'simulation', 't3', 1, 1, 3, 3, 'p/3', 'missing', NULL, NULL, NULL);
        INSERT INTO output_events VALUES (1, 1, 'missing', 'verified', NULL), (2, 1, 'missing', 'verified', NULL);
        INSERT INTO transitions (job_id, from_status, to_status, at, reason) VALUES
            ('job-00000001', NULL, 'validating', '2026-01-01T00:00:00Z', 'r'),
            ('job-00000001', 'validating', 'partial', '2026-01-02T00:00:00Z', 'v');
        INSERT INTO unexpected_paths VALUES ('job-00000001', 'q/9', 1);
    """)
    conn.commit()
    conn.close()
    return path


def table_rows(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every table's rows over ``columns`` (default all; a later step may add a column)."""
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT {', '.join((columns or {}).get(t) or ['*'])} FROM {t} ORDER BY 1, 2")
                .fetchall() for t in TABLES}
    finally:
        conn.close()


def table_columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    finally:
        conn.close()


def without_spec(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    """The columns to compare across the upgrade: step 0007 moves jobs.spec_gz to job_specs."""
    return {**columns, "jobs": [c for c in columns["jobs"] if c != "spec_gz"]}


def view_rows(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every view's rows over ``columns`` (default all; a later schema may add columns to a view)."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for v in ("expected_outputs", "job_summary", "unverified_outputs", "job_lineage"):
            names = (columns or {}).get(v) or [d[0] for d in conn.execute(f"SELECT * FROM {v} LIMIT 0").description]
            out[v] = conn.execute(f"SELECT {', '.join(names)} FROM {v} ORDER BY 1, 2").fetchall()
        return out
    finally:
        conn.close()


def view_columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {v: [d[0] for d in conn.execute(f"SELECT * FROM {v} LIMIT 0").description]
                for v in ("expected_outputs", "job_summary", "unverified_outputs", "job_lineage")}
    finally:
        conn.close()


def schema_of(path: Path) -> set[tuple[str, str, str]]:
    """Every table, index and view with its SQL, comments, quotes and spacing normalised."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    finally:
        conn.close()

    def norm(sql: str | None) -> str:
        sql = re.sub(r"--[^\n]*", "", sql or "")
        sql = re.sub(r"\bIF NOT EXISTS\b", "", sql).replace('"', "")
        sql = re.sub(r"\s+", " ", sql)
        return re.sub(r"\s*([(),])\s*", r"\1", sql).strip()

    return {(kind, name, norm(sql)) for kind, name, sql in rows}


def test_a_ledger_from_the_first_schema_keeps_its_rows_and_views(tmp_path):
    path = first_schema_ledger(tmp_path / "first.db")
    rows, views, columns = table_rows(path), view_rows(path), view_columns(path)
    table_cols = without_spec(table_columns(path))
    rows = table_rows(path, table_cols)
    with Ledger(path) as ledger:
        assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [r["name"] for r in ledger.query("SELECT name FROM _migrations ORDER BY name")] == migrations.names()
        summary = ledger.query("SELECT * FROM job_summary WHERE job_id = 'job-00000001'")[0]
        assert (summary["expected"], summary["verified"], summary["missing"], summary["pct_verified"]) == (3, 2, 1, 66.7)
        assert ledger.query("SELECT depth FROM job_lineage WHERE job_id = 'job-00000001-r1'")[0]["depth"] == 1
        # step 0005: an output no validation observed is unchecked; one observed missing stays missing
        assert [r["state"] for r in ledger.query("SELECT state FROM outputs WHERE output_id IN (3, 4) "
                                                 "ORDER BY output_id")] == ["missing", "unchecked"]
        # step 0006: observed states live in output_states; the never observed output 4 has no row there
        assert [(r["output_id"], r["state"], r["state_run"]) for r in ledger.query(
            "SELECT * FROM output_states ORDER BY output_id")] == [(1, "verified", 1), (2, "verified", 1),
                                                                   (3, "missing", 1)]
        # the CHECK takes the new states and still refuses nonsense
        ledger.conn.execute("UPDATE output_states SET state = 'stale' WHERE output_id = 2")
        with pytest.raises(sqlite3.IntegrityError):
            ledger.conn.execute("UPDATE output_states SET state = 'bogus' WHERE output_id = 1")
        ledger.conn.execute("UPDATE output_states SET state = 'verified' WHERE output_id = 2")
        assert {r["name"] for r in ledger.query("PRAGMA index_list(manifest)")} >= {"manifest_job"}
    # Not one value changed, the 2**64-1 seed kept as text included, but for step 0005: the output of the
    # job no validation ever ran on (output 4) was never observed, so it is 'unchecked', not 'missing'.
    state = table_cols["outputs"].index("state")
    rows["outputs"] = [r[:state] + ("unchecked",) + r[state + 1:] if r[0] == 4 else r
                       for r in rows["outputs"]]
    assert table_rows(path, table_cols) == rows
    missing = columns["job_summary"].index("missing")
    views["job_summary"] = [r[:missing] + (0,) + r[missing + 1:] if r[0] == "job-00000001-r1" else r
                            for r in views["job_summary"]]
    for view, column in (("unverified_outputs", "reason"), ("expected_outputs", "state")):
        job, state = columns[view].index("job_id"), columns[view].index(column)
        views[view] = [r[:state] + ("unchecked",) + r[state + 1:] if r[job] == "job-00000001-r1" else r
                       for r in views[view]]
    assert view_rows(path, columns) == views
    # foreign keys still hold and cascade through the rebuilt table
    with Ledger(path) as ledger:
        with pytest.raises(sqlite3.IntegrityError):
            ledger.conn.execute("INSERT INTO manifest (job_id, kind, task_id, param_key, template_id, path) "
                                "VALUES ('job-nope', 'simulation', 't', 1, 1, 'x')")
        with pytest.raises(sqlite3.IntegrityError):  # output states still name run 1 (no cascade from runs)
            ledger.conn.execute("DELETE FROM validation_runs")
        ledger.conn.execute("DELETE FROM jobs WHERE job_id = 'job-00000001-r1'")
        assert ledger.query("SELECT count(*) AS n FROM outputs")[0]["n"] == 3
        ledger.conn.execute("DELETE FROM jobs WHERE job_id = 'job-00000001'")  # cascades through the manifest
        assert [ledger.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES[3:]] == [0, 0, 0, 0, 0]
        assert ledger.query("SELECT count(*) AS n FROM output_states")[0]["n"] == 0


def test_a_ledger_made_by_the_previous_release_answers_the_same_through_the_cli(tmp_path, monkeypatch):
    path = legacy_ledger(tmp_path / "release.db", (FIXTURES / "ledger_4db53e4.sql").read_text())
    views, columns = view_rows(path), view_columns(path)
    table_cols = without_spec(table_columns(path))
    rows = table_rows(path, table_cols)
    conn = sqlite3.connect(path)
    specs = conn.execute("SELECT job_id, spec_gz FROM jobs WHERE spec_gz IS NOT NULL "
                         "ORDER BY job_id").fetchall()
    conn.close()
    env = {"JOBLEDGER_DB": str(path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = subprocess.run([sys.executable, "-m", "jobledger.cli", "status", "job-5a11e0c3"], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "verified         9 (75.0%)" in run.stdout and "errored          1" in run.stdout
    assert table_rows(path, table_cols) == rows and view_rows(path, columns) == views
    conn = sqlite3.connect(path)  # step 0007 moved every spec, byte for byte, to job_specs
    assert specs and conn.execute("SELECT job_id, spec_gz FROM job_specs ORDER BY job_id").fetchall() == specs
    conn.close()
    lineage = subprocess.run([sys.executable, "-m", "jobledger.cli", "sql", "--csv",
                              "SELECT job_id, depth, status FROM job_lineage ORDER BY depth"],
                             capture_output=True, text=True, env=env)
    assert lineage.stdout.split() == ["job_id,depth,status", "job-5a11e0c3,0,partial", "job-5a11e0c3-r1,1,failed"]


@pytest.mark.parametrize("make", [first_schema_ledger,
                                  lambda p: legacy_ledger(p, (FIXTURES / "ledger_4db53e4.sql").read_text())])
def test_a_migrated_ledger_has_exactly_the_schema_of_a_new_one(tmp_path, make):
    old = make(tmp_path / "old.db")
    Ledger(old).close()
    Ledger(tmp_path / "new.db").close()
    assert schema_of(old) == schema_of(tmp_path / "new.db")


def test_a_failed_upgrade_changes_nothing(tmp_path):
    path = first_schema_ledger(tmp_path / "broken.db")
    conn = sqlite3.connect(path)  # foreign keys off: a row the upgrade's foreign key check must catch
    conn.execute("INSERT INTO transitions (job_id, to_status, at) VALUES ('job-gone', 'pending', 'x')")
    conn.commit()
    conn.close()
    before = list(sqlite3.connect(path).iterdump())
    with pytest.raises(LedgerError, match="cannot be upgraded: 1 row.* break a foreign key"):
        Ledger(path)
    assert list(sqlite3.connect(path).iterdump()) == before
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1


def test_concurrent_openers_migrate_once(tmp_path):
    path = first_schema_ledger(tmp_path / "race.db")
    code = "import sys; from jobledger.ledger import Ledger; Ledger(sys.argv[1]).close()"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stderr=subprocess.PIPE)
             for _ in range(6)]
    assert all(p.wait() == 0 for p in procs), [p.stderr.read() for p in procs if p.stderr]
    conn = sqlite3.connect(path)
    assert [n for (n,) in conn.execute("SELECT name FROM _migrations ORDER BY name")] == migrations.names()
    assert conn.execute("SELECT count(*) FROM outputs").fetchone()[0] == 4


def test_a_ledger_with_unknown_steps_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Ledger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations (name) VALUES ('9999_from_the_future')")
    conn.execute("PRAGMA user_version = 1")  # as if an older jobledger had been told to look at it
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="does not know .*9999_from_the_future"):
        Ledger(path)


def test_read_only_opening_of_an_old_ledger_upgrades_it_first(tmp_path):
    path = first_schema_ledger(tmp_path / "old.db")
    with Ledger(path, readonly=True) as ledger:
        assert ledger.query("SELECT count(*) AS n FROM unverified_outputs")[0]["n"] == 2
        with pytest.raises(sqlite3.OperationalError):
            ledger.conn.execute("DELETE FROM jobs")
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_with_foreign_tables_and_no_version_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="no jobledger schema version"):
        Ledger(path)
