"""The SQLite ledger: schema from schema.sql, upgrades, transactions, registration semantics."""
from __future__ import annotations

import json
import sqlite3

import pytest

from jobledger import api
from jobledger.contracts import ContractError
from jobledger.ledger import SCHEMA_VERSION, Ledger, LedgerError, UnknownJob, default_path
from jobledger.migrations import schema_sql


def test_schema_sql_defines_everything(ledger):
    assert "CREATE TABLE IF NOT EXISTS manifest" in schema_sql() and "CREATE VIEW outputs" in schema_sql()
    names = {r["name"] for r in ledger.query("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
    assert {"jobs", "params", "task_templates", "manifest", "output_states", "outputs", "transitions",
            "validation_runs", "output_events", "unexpected_paths", "expected_outputs", "job_summary",
            "unverified_outputs", "job_lineage"} <= names


def test_wal_mode_busy_timeout_and_version(ledger):
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_default_path_respects_xdg_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("JOBLEDGER_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "jobledger" / "ledger.db"
    monkeypatch.setenv("JOBLEDGER_DB", str(tmp_path / "other.db"))
    assert default_path() == tmp_path / "other.db"


def test_newer_ledger_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerError, match="newer than this jobledger"):
        Ledger(path)


def test_register_writes_job_params_once_outputs_and_transition(ledger, golden, tmp_path):
    result = api.register(ledger, golden["simjob_spec_example"], store=str(tmp_path / "store"))
    assert result.created and result.expected == 4 and result.status == "scheduled"
    job = ledger.job("job-deadbeef")
    assert job["store_url"] == str(tmp_path / "store") and job["seed_policy"] == "runner"
    assert ledger.query("SELECT count(*) AS n FROM params")[0]["n"] == 2
    rows = ledger.query("SELECT * FROM expected_outputs ORDER BY output_id")
    assert [r["run_seed"] for r in rows] == [3339843738, 3339843739, 3339843740, 42]
    assert [r["task_seed"] for r in rows] == [3339843738, 104683033, 2701143075, 42]
    golden_ids = {v["canonical_task_id"] for v in golden["task_id"]}
    assert {r["task_id"] for r in rows} == golden_ids
    assert {r["path"] for r in rows} == {v["token_layout"] for v in golden["paths"]}
    assert rows[0]["outputs"] == '["incidence","prevalence"]' and rows[0]["entrypoint"] == "models.seir.SEIR/baseline"
    assert api.history(ledger, "job-deadbeef")[0]["to_status"] == "scheduled"
    assert ledger.spec_of("job-deadbeef") == golden["simjob_spec_example"]


def test_reregistering_identical_is_a_noop_and_different_is_an_error(ledger, golden, tmp_path):
    store = str(tmp_path / "store")
    api.register(ledger, golden["simjob_spec_example"], store=store)
    again = api.register(ledger, golden["simjob_spec_example"], store=store)
    assert not again.created and again.expected == 4
    changed = json.loads(json.dumps(golden["simjob_spec_example"]))
    changed["priority"] = 5
    with pytest.raises(LedgerError, match="already registered"):
        api.register(ledger, changed, store=store)
    with pytest.raises(LedgerError, match="already registered"):
        api.register(ledger, golden["simjob_spec_example"], store=store, seed_policy="task")
    assert ledger.query("SELECT count(*) AS n FROM outputs")[0]["n"] == 4


def test_a_failed_registration_leaves_nothing_behind(ledger, golden, tmp_path):
    bad = json.loads(json.dumps(golden["simjob_spec_example"]))
    bad["job_id"] = "job-00000001"
    bad["target_spec"] = {"data": {"target_entrypoints": ["targets.x/y"]}}
    # A custom layout has no aggregation path: the error comes after the job row was inserted.
    with pytest.raises(ContractError, match="aggregation"):
        api.register(ledger, bad, store=str(tmp_path), layout="x/{param_id}/{seed}")
    for table in ("jobs", "outputs", "params", "transitions", "task_templates"):
        assert ledger.query(f"SELECT count(*) AS n FROM {table}")[0]["n"] == 0, table


def test_study_registration_needs_a_bundle_and_is_deterministic(ledger, golden, tmp_path):
    study = golden["study_spec_example"]
    with pytest.raises(ContractError, match="--bundle"):
        api.register(ledger, study)
    bundle = golden["simjob_spec_example"]["bundle_ref"]
    first = api.register(ledger, study, bundle=bundle, store=str(tmp_path))
    second = api.register(ledger, study, bundle=bundle, store=str(tmp_path))
    assert first.job_id == second.job_id and not second.created and first.expected == 4


def test_huge_seeds_are_kept_exactly(ledger, tmp_path):
    from jobledger.contracts import SimJob, SimTask, UniqueParameterSet
    bundle = "sha256:" + "ab" * 32
    ups = UniqueParameterSet.from_params({"a": 1})
    job = SimJob("job-0000beef", bundle, (SimTask(bundle, "m.x/s", ups, 2**64 - 1),))
    api.register(ledger, job, store=str(tmp_path), seed_policy="task")
    row = ledger.query("SELECT task_seed, path FROM outputs")[0]
    assert int(row["task_seed"]) == 2**64 - 1 and row["path"].endswith(f"seed_{2**64 - 1}")


def test_unknown_job_and_illegal_transition_change_nothing(ledger, golden, tmp_path):
    api.register(ledger, golden["simjob_spec_example"], store=str(tmp_path))
    with pytest.raises(UnknownJob):
        ledger.transition("job-ffffffff", "running", "x")
    from jobledger.states import IllegalTransition
    with pytest.raises(IllegalTransition):
        ledger.transition("job-deadbeef", "succeeded", "skip validation")
    assert ledger.job("job-deadbeef")["status"] == "scheduled"
    assert len(ledger.transitions("job-deadbeef")) == 1


def test_readonly_connection_refuses_writes(db_path, golden, tmp_path):
    with Ledger(db_path) as ledger:
        api.register(ledger, golden["simjob_spec_example"], store=str(tmp_path))
    with pytest.raises(LedgerError, match="readonly"):
        api.run_sql(db_path, "DELETE FROM jobs")
    result = api.run_sql(db_path, "SELECT job_id, expected FROM job_summary")
    assert result.columns == ("job_id", "expected") and list(result) == [("job-deadbeef", 4)]


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(LedgerError, match="not a usable jobledger ledger"):
        Ledger(path)
    assert path.read_text().startswith("these are my notes")
