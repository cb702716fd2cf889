"""Artifact-driven validation: the sample's truth, the manual workflow, exit codes, deep checks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobledger import api, states
from jobledger.ledger import Ledger, SpecNeeded
from jobledger.stores import open_store
from jobledger.stores.local import write_result_dir
from jobledger.validation import validate_job
from jobledger.validation_plan import explain

from helpers import cli

JOB = "job-5a11e0c3"


@pytest.fixture
def sample_spec(spec_dir) -> Path:
    return spec_dir / "sample" / "job-5a11e0c3.json"


@pytest.fixture
def truth(spec_dir) -> dict:
    return json.loads((spec_dir / "sample" / "truth.json").read_text())


def classification(ledger: Ledger, job_id: str) -> dict:
    found = {s: sorted(r["path"] for r in ledger.query("SELECT path FROM outputs WHERE job_id = ? AND state = ?",
                                                       (job_id, s))) for s in states.OUTPUT_STATES}
    found["unexpected"] = sorted(r["path"] for r in ledger.query(
        "SELECT path FROM unexpected_paths WHERE job_id = ?", (job_id,)))
    return found


def expected_truth(truth: dict) -> dict:
    """The sample's truth per output state (the sample has no aggregations, so nothing is stale)."""
    return {**{s: [] for s in states.OUTPUT_STATES},
            **{k: sorted(truth[k]) for k in ("verified", "missing", "errored", "incomplete", "unexpected")}}


def snapshot(db_path: Path) -> list[str]:
    """Every row of the ledger, to show that a command changed nothing."""
    conn = Ledger(db_path, readonly=True).conn
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def write_all_outputs(ledger: Ledger, job_id: str, root: Path) -> list[str]:
    """A complete store for a job: one worker-format result directory per expected output."""
    rows = ledger.query("SELECT e.path, e.param_id, e.run_seed, e.entrypoint, e.outputs, e.bundle_ref, "
                        "p.params_json FROM expected_outputs e JOIN params p USING (param_id) WHERE e.job_id = ?",
                        (job_id,))
    for r in rows:
        names = json.loads(r["outputs"]) or ["out"]
        write_result_dir(root / r["path"], bundle_ref=r["bundle_ref"], entrypoint=r["entrypoint"],
                         params=json.loads(r["params_json"]), param_id=r["param_id"], seed=int(r["run_seed"]),
                         outputs={n: f"{n}:{r['run_seed']}".encode() * 10 for n in names})
    return [r["path"] for r in rows]


def to_validating(ledger: Ledger, job_id: str) -> None:
    ledger.transition(job_id, states.RUNNING, "test: started")
    ledger.transition(job_id, states.VALIDATING, "test: runner finished")


# ---------------------------------------------------------------- the sample's truth

@pytest.mark.parametrize("strategy", ["list", "scan", "auto"])
def test_sample_classification_equals_truth_on_a_local_directory(ledger, sample_spec, sample_tree, truth, strategy):
    api.register(ledger, sample_spec, store=str(sample_tree))
    to_validating(ledger, JOB)
    result = validate_job(ledger, JOB, strategy=strategy)
    assert classification(ledger, JOB) == expected_truth(truth)
    used = "scan" if strategy == "auto" else strategy  # auto scans a directory store
    assert (result.expected, result.verified, result.missing, result.errored, result.incomplete,
            result.unexpected) == (12, 9, 1, 1, 1, 1)
    assert result.status == states.PARTIAL and result.outcome == "partial" and result.exit_code == 3
    run = ledger.query("SELECT * FROM validation_runs WHERE run_id = ?", (result.run_id,))[0]
    assert result.strategy == used
    assert (run["strategy"], run["verified"], run["unexpected"], run["outcome"]) == (used, 9, 1, "partial")
    assert run["requests"] == result.requests > 0


def test_sample_classification_equals_truth_on_azurite(ledger, sample_spec, sample_tree, truth, azure_conn):
    url = f"az://prov-{uuid.uuid4().hex[:12]}/workers"
    open_store(url).upload_tree(sample_tree)
    api.register(ledger, sample_spec, store=url)
    to_validating(ledger, JOB)
    result = validate_job(ledger, JOB)
    assert result.strategy == "list" and result.requests == 1  # one page holds the whole job
    assert classification(ledger, JOB) == expected_truth(truth)
    assert result.status == states.PARTIAL
    # The head strategy sees the same states of the expected outputs, one request each.
    again = validate_job(ledger, JOB, strategy="head", force=True)
    assert again.requests == 12 and again.unexpected is None and again.changed == 0
    assert classification(ledger, JOB) == expected_truth(truth)
    assert azure_conn not in json.dumps(again.as_dict()) and "AccountKey" not in json.dumps(ledger.query("SELECT * FROM jobs"),
                                                                                  default=str)


def test_head_strategy_classifies_like_list_on_a_local_directory(ledger, sample_spec, sample_tree, truth):
    api.register(ledger, sample_spec, store=str(sample_tree))
    result = validate_job(ledger, JOB, strategy="head")
    found = classification(ledger, JOB)
    assert {k: found[k] for k in states.OUTPUT_STATES} == {k: expected_truth(truth)[k] for k in states.OUTPUT_STATES}
    assert result.unexpected is None and found["unexpected"] == []


# ---------------------------------------------------------------- decisions

def test_manual_workflow_delete_restore_on_a_local_store(db_path, sample_spec, tmp_path):
    store = tmp_path / "store"
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store=str(store))
        paths = write_all_outputs(ledger, JOB, store)
        to_validating(ledger, JOB)

    done = cli("validate", JOB)
    assert done.exit_code == 0, done.output
    assert "validating → succeeded" in done.output and "12/12 verified" in done.output

    victim = paths[4]
    backup = tmp_path / "backup"
    shutil.move(store / victim, backup)
    partial = cli("validate", JOB, "--force", "--json", ok=(3,))
    assert partial.exit_code == 3, partial.output
    doc = json.loads(partial.output)
    assert (doc["status"], doc["outcome"], doc["verified"], doc["missing"]) == ("partial", "partial", 11, 1)
    missing = cli("missing", JOB, "--format", "paths")
    assert missing.exit_code == 0 and missing.output.split() == [victim]

    shutil.move(backup, store / victim)
    restored = cli("validate", JOB, "--force")
    assert restored.exit_code == 0 and "partial → validating → succeeded" in restored.output
    assert cli("missing", JOB, "--format", "paths").output.strip() == ""

    with Ledger(db_path, readonly=True) as ledger:
        history = [(h["from_status"], h["to_status"]) for h in ledger.transitions(JOB)]
        assert history[-6:] == [("running", "validating"), ("validating", "succeeded"), ("succeeded", "validating"),
                                ("validating", "partial"), ("partial", "validating"), ("validating", "succeeded")]
        assert "--force" in ledger.transitions(JOB)[-2]["reason"]
        # "verified earlier, gone now" is one query over the recorded changes; unchanged outputs add no
        # events, and neither does an output's first observation (the job's first run records it).
        gone = ledger.query("SELECT o.path FROM output_events e JOIN outputs o USING (output_id) "
                            "WHERE e.from_state = 'verified' AND e.to_state = 'missing'")
        assert [g["path"] for g in gone] == [victim]
        assert ledger.query("SELECT count(*) AS n FROM output_events")[0]["n"] == 2
        row = ledger.query("SELECT first_verified_run, last_seen_run, state_run FROM outputs WHERE path = ?",
                           (victim,))[0]
        runs = [r["run_id"] for r in ledger.query("SELECT run_id FROM validation_runs ORDER BY run_id")]
        assert (row["first_verified_run"], row["last_seen_run"], row["state_run"]) == (runs[0], runs[2], runs[2])
    status = cli("status", JOB)
    assert "last validation" in status.output and "complete" in status.output


def test_running_job_gets_a_progress_report_without_a_transition(ledger, sample_spec, sample_tree):
    api.register(ledger, sample_spec, store=str(sample_tree), namespace="modelops")  # its runtime decides
    result = validate_job(ledger, JOB)
    assert (result.status, result.outcome, result.transitioned, result.verified) == \
        ("scheduled", "in-progress", False, 9)
    assert ledger.job(JOB)["status"] == "scheduled" and len(ledger.transitions(JOB)) == 1
    assert ledger.job(JOB)["validation_attempts"] == 1


def test_terminal_job_keeps_its_status_without_force(db_path, sample_spec, sample_tree):
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store=str(sample_tree))
        to_validating(ledger, JOB)
        validate_job(ledger, JOB)
    before = snapshot(db_path)
    again = cli("validate", JOB, "--json", ok=(3,))
    assert again.exit_code == 3
    doc = json.loads(again.output)
    assert doc["status"] == "partial" and doc["validated"] is False and "--force" in doc["note"]
    assert snapshot(db_path) == before


def test_failed_job_becomes_succeeded_when_outputs_appear(ledger, sample_spec, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    api.register(ledger, sample_spec, store=str(store))
    to_validating(ledger, JOB)
    nothing = validate_job(ledger, JOB)
    assert (nothing.status, nothing.exit_code) == ("failed", 4)
    write_all_outputs(ledger, JOB, store)
    revived = validate_job(ledger, JOB, force=True, reason="outputs copied back")
    assert (revived.status, revived.exit_code) == ("succeeded", 0)
    assert "outputs copied back" in ledger.transitions(JOB)[-2]["reason"]


def test_a_cancelled_job_is_observed_but_stays_cancelled(sample_spec, sample_tree, db_path):
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store=str(sample_tree))
        ledger.transition(JOB, states.CANCELLED, "test")
    observed = cli("validate", JOB, ok=(3,))
    assert observed.output.startswith(f"{JOB}: cancelled (no transition), outcome cancelled")
    assert "--force" not in observed.output
    result = cli("validate", JOB, "--force", "--json", ok=(3,))
    doc = json.loads(result.output)
    assert (doc["status"], doc["outcome"], doc["transitioned"], doc["verified"]) == \
        ("cancelled", "cancelled", False, 9)
    with Ledger(db_path) as ledger:
        assert [t["to_status"] for t in ledger.transitions(JOB)] == ["scheduled", "cancelled"]


def test_job_without_spec_or_outputs_gets_no_verdict_but_the_way_to_one(ledger):
    now = "2026-01-01T00:00:00Z"
    ledger.conn.execute("INSERT INTO jobs (job_id, status, created_at, updated_at) VALUES (?,?,?,?)",
                        ("job-0ld00000", "validating", now, now))
    with pytest.raises(SpecNeeded, match="no expected outputs known .* `jobledger register SPEC --job-id "
                                         "job-0ld00000` to validate it"):
        validate_job(ledger, "job-0ld00000")
    assert ledger.job("job-0ld00000")["status"] == "validating"
    assert ledger.query("SELECT count(*) AS n FROM validation_runs") == [{"n": 0}]


# ---------------------------------------------------------------- exit codes, errors, explain

def test_exit_codes_through_the_cli(db_path, sample_spec, sample_tree, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cli("register", sample_spec, "--store", empty)
    none = cli("validate", JOB, ok=None)
    assert none.exit_code == 4 and "0/12 verified" in none.output
    os.rmdir(empty)
    shutil.copytree(sample_tree, empty)
    some = cli("validate", JOB, "--force", ok=(3,))
    assert "9/12 verified" in some.output
    assert cli("validate", "job-ffffffff", ok=(1,)).stderr == "error: unknown job id 'job-ffffffff'\n"


@pytest.mark.parametrize("store", ["missing-dir", "ftp://example.org/x", "az://prov/x"])
def test_unreachable_store_or_bad_url_is_one_line_and_changes_nothing(db_path, sample_spec, tmp_path, store,
                                                                      monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    url = str(tmp_path / store) if store == "missing-dir" else store
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store=str(tmp_path))
        ledger.conn.execute("UPDATE jobs SET store_url = ?", (url,))  # e.g. a store that went away
        to_validating(ledger, JOB)
    before = snapshot(db_path)
    result = cli("validate", JOB, ok=(1,))
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert snapshot(db_path) == before


def test_dead_azure_endpoint_is_one_line_without_the_connection_string(db_path, sample_spec, azurite, monkeypatch):
    from azurite import connection_string, free_port
    dead = connection_string(free_port())
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", dead)
    monkeypatch.setenv("JOBLEDGER_AZURE_RETRIES", "0")
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store="az://prov/x")
        to_validating(ledger, JOB)
    before = snapshot(db_path)
    result = cli("validate", JOB, ok=(1,))
    assert "cannot reach the blob service" in result.output
    assert "AccountKey" not in result.output and len(result.output.strip().splitlines()) == 1
    assert snapshot(db_path) == before


def test_explain_prints_the_plan_and_changes_nothing(db_path, sample_spec, sample_tree):
    with Ledger(db_path) as ledger:
        api.register(ledger, sample_spec, store=str(sample_tree))
    before = snapshot(db_path)
    shown = cli("validate", JOB, "--explain")
    assert shown.exit_code == 0
    assert "token/v1/sims/fdcb3d01c9b7/" in shown.output and "strategy: scan" in shown.output
    plan = json.loads(cli("validate", JOB, "--explain", "--json", "--strategy", "head").output)
    assert plan["strategy"] == "head" and plan["estimates"]["head"] == 12 and plan["estimates"]["list"] > 12
    assert snapshot(db_path) == before


def test_auto_picks_head_when_listing_would_cost_far_more(ledger, sample_spec, sample_tree):
    api.register(ledger, sample_spec, store=str(sample_tree))
    # A previous listing of these prefixes took 1,000 requests (the bundle's prefix is shared with other jobs).
    ledger.conn.execute("INSERT INTO validation_runs (job_id, started_at, store_url, strategy, requests, outcome) "
                        "VALUES (?, '2026-01-01', ?, 'list', 1000, 'partial')", (JOB, str(sample_tree)))
    plan = explain(ledger, JOB)
    assert plan.strategy == "head" and plan.estimate_basis == "previous list run"
    assert validate_job(ledger, JOB).strategy == "head"


def test_large_job_is_listed_in_parallel_shard_parts(ledger, tmp_path):
    params = [{"beta": i / 100} for i in range(80)]
    spec = {"model": "models.seir", "scenario": "baseline", "parameter_sets": params, "n_replicates": 1,
            "outputs": ["incidence"]}
    store = tmp_path / "store"
    job = api.register(ledger, spec, bundle="sha256:" + "b" * 64, job_id="job-00000bbb", store=str(store)).job_id
    paths = write_all_outputs(ledger, job, store)
    shutil.rmtree(store / paths[0])
    plan = explain(ledger, job, "list")
    assert len(plan.parts) == 16 and all(p.startswith(plan.prefixes[0]) for p in plan.parts)
    result = validate_job(ledger, job, strategy="list")
    assert (result.verified, result.missing, result.unexpected) == (79, 1, 0)
    assert ledger.unverified(job)[0]["path"] == paths[0]


# ---------------------------------------------------------------- deep checks

def test_deep_catches_a_wrong_param_id_and_a_truncated_artifact(ledger, sample_spec, sample_tree):
    api.register(ledger, sample_spec, store=str(sample_tree))
    to_validating(ledger, JOB)
    base = sample_tree / "token/v1/sims/fdcb3d01c9b7"
    wrong = base / "55/87/params_7808a5c9/seed_2626804217"
    meta = json.loads((wrong / "metadata.json").read_text())
    meta["param_id"] = "7808a5c9" + "0" * 56  # the path keeps only 8 characters of it
    (wrong / "metadata.json").write_text(json.dumps(meta))
    truncated = base / "2e/2c/params_a6c4c857/seed_2828022611/artifact_prevalence.arrow"
    truncated.write_bytes(truncated.read_bytes()[:100])

    shallow = validate_job(ledger, JOB, strategy="list")
    assert shallow.verified == 9  # the listing alone cannot see either fault

    deep = validate_job(ledger, JOB, force=True, deep=True)
    assert (deep.verified, deep.errored) == (7, 3)
    details = {r["path"]: r["detail"] for r in ledger.unverified(JOB, "errored")}
    rel = lambda p: p.relative_to(sample_tree).as_posix()
    assert "param_id" in details[rel(wrong)]
    assert "artifact_prevalence.arrow is 100 bytes, result.json says 688" in details[rel(truncated.parent)]
    assert "R0 diverged" in details["token/v1/sims/fdcb3d01c9b7/b3/52/params_c36e755d/seed_3143379043"]


def test_checksums_catch_a_same_size_corruption(ledger, sample_spec, sample_tree):
    api.register(ledger, sample_spec, store=str(sample_tree), namespace="modelops")  # observed, not decided
    artifact = sample_tree / "token/v1/sims/fdcb3d01c9b7/85/b6/params_e8f10add/seed_859729836/artifact_incidence.arrow"
    data = bytearray(artifact.read_bytes())
    data[10] ^= 0xFF
    artifact.write_bytes(bytes(data))
    assert validate_job(ledger, JOB, deep=True).verified == 9
    checked = validate_job(ledger, JOB, checksums=True)
    assert checked.verified == 8 and checked.checksums is True
    assert "checksum" in ledger.unverified(JOB, "errored")[0]["detail"] + ledger.unverified(JOB, "errored")[1]["detail"]


# ---------------------------------------------------------------- the real console script

def test_console_script_validates_with_json_and_exit_status(db_path, sample_spec, sample_tree, truth):
    env = {**os.environ, "JOBLEDGER_DB": str(db_path)}
    exe = [sys.executable, "-m", "jobledger"]
    reg = subprocess.run([*exe, "register", str(sample_spec), "--store", str(sample_tree)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert reg.returncode == 0, reg.stderr
    run = subprocess.run([*exe, "validate", JOB, "--json", "--strategy", "list"], env=env,
                         capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    doc = json.loads(run.stdout)
    for key in ("job_id", "status", "outcome", "expected", "verified", "missing", "errored", "incomplete",
                "unexpected", "strategy", "requests", "seconds"):
        assert key in doc
    assert (doc["verified"], doc["missing"], doc["errored"], doc["incomplete"], doc["unexpected"]) == (9, 1, 1, 1, 1)
    assert run.stderr == ""  # no progress bar when stderr is not a terminal
