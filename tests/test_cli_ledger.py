"""The read-side CLI: register, status, list, missing, history, sql, path — and its errors."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import cli


@pytest.fixture
def run(db_path):
    """The CLI on this test's ledger; exit codes are asserted by each test."""
    return lambda *args: cli("--db", db_path, *args, ok=None)


@pytest.fixture
def sample_job(spec_dir):
    return str(spec_dir / "sample" / "job-5a11e0c3.json")


def write(tmp_path, name, doc) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def one_line_error(result, *needles, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


def test_register_then_status_json(run, sample_job, tmp_path):
    result = run("register", sample_job, "--store", str(tmp_path / "store"))
    assert result.exit_code == 0 and "job-5a11e0c3: registered, 12 expected outputs" in result.stdout
    doc = json.loads(run("status", "job-5a11e0c3", "--json").stdout)
    assert doc["status"] == "scheduled" and doc["expected"] == 12 and doc["verified"] == 0
    assert (doc["unchecked"], doc["missing"], doc["validated"]) == (12, 0, False)  # nothing observed yet
    assert doc["seed_policy"] == "runner" and doc["layout"] == "token"
    assert [s["expected"] for s in doc["param_sets"]] == [3, 3, 3, 3]
    again = run("register", sample_job, "--store", str(tmp_path / "store"))
    assert again.exit_code == 0 and "already registered" in again.stdout


def test_store_defaults_from_environment(run, sample_job, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELOPS_STORAGE_DIR", str(tmp_path / "mops"))
    run("register", sample_job)
    assert json.loads(run("status", "job-5a11e0c3", "--json").stdout)["store_url"] == str(tmp_path / "mops")


def test_missing_formats(run, sample_job, spec_dir, tmp_path):
    run("register", sample_job, "--store", str(tmp_path))
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    expected = set(truth["verified"] + truth["missing"] + truth["errored"] + truth["incomplete"])
    paths = run("missing", "job-5a11e0c3", "--format", "paths").stdout.split()
    assert set(paths) == expected
    rows = json.loads(run("missing", "job-5a11e0c3", "--format", "json").stdout)
    assert len(rows) == 12 and list(rows[0]) == ["path", "reason", "param_id", "seed", "task_id", "detail"]
    assert {r["reason"] for r in rows} == {"unchecked"}  # no validation has run
    table = list(csv.DictReader(io.StringIO(run("missing", "job-5a11e0c3", "--format", "csv").stdout)))
    assert len(table) == 12 and table[0]["path"] == rows[0]["path"]
    assert run("missing", "job-5a11e0c3", "--reason", "errored", "--format", "json").stdout.strip() == "[]"
    assert "param_id" in run("missing", "job-5a11e0c3").stdout


def test_list_history_sql_and_path(run, sample_job, golden, tmp_path, db_path):
    run("register", sample_job, "--store", str(tmp_path))
    run("register", write(tmp_path, "g.json", golden["simjob_spec_example"]), "--store", str(tmp_path))
    listed = json.loads(run("list", "--json").stdout)
    assert {j["job_id"] for j in listed} == {"job-5a11e0c3", "job-deadbeef"}
    assert json.loads(run("list", "--status", "running", "--json").stdout) == []
    assert len(json.loads(run("list", "-n", "1", "--json").stdout)) == 1
    assert len(json.loads(run("list", "--since", "1h", "--json").stdout)) == 2
    assert json.loads(run("list", "--since", "2999-01-01", "--json").stdout) == []
    history = run("history", "job-5a11e0c3")
    assert "registered" in history.stdout and "scheduled" in history.stdout
    out = run("sql", "SELECT job_id, expected FROM job_summary ORDER BY job_id", "--json").stdout
    assert json.loads(out) == [{"job_id": "job-5a11e0c3", "expected": 12}, {"job_id": "job-deadbeef", "expected": 4}]
    assert run("sql", "SELECT count(*) AS n FROM outputs", "--csv").stdout == "n\n16\n"
    assert run("path").stdout.strip() == str(db_path)


def test_errors_are_one_line_and_change_nothing(run, sample_job, golden, tmp_path):
    run("register", sample_job, "--store", str(tmp_path))
    before = run("sql", "SELECT (SELECT count(*) FROM jobs) || '/' || (SELECT count(*) FROM outputs) AS n", "--csv").stdout
    one_line_error(run("status", "job-ffffffff"), "unknown job id", "job-ffffffff")
    one_line_error(run("missing", "job-ffffffff"), "unknown job id")
    one_line_error(run("register", str(tmp_path / "nope.json")), "cannot read spec")
    one_line_error(run("register", write(tmp_path, "bad.json", "{ not json")), "invalid JSON", "line 1")
    wrong = json.loads(json.dumps(golden["simjob_spec_example"]))
    wrong["tasks"][2]["params"]["param_id"] = "ab" * 32
    one_line_error(run("register", write(tmp_path, "wrong.json", wrong)), "tasks[2].params.param_id")
    bad_bundle = json.loads(json.dumps(golden["simjob_spec_example"]))
    bad_bundle["bundle_ref"] = "repo:latest"
    one_line_error(run("register", write(tmp_path, "bb.json", bad_bundle)), "bundle_ref")
    one_line_error(run("register", write(tmp_path, "study.json", golden["study_spec_example"])), "--bundle")
    one_line_error(run("register", write(tmp_path, "study2.json", golden["study_spec_example"]), "--bundle", "nope"),
                   "--bundle")
    one_line_error(run("sql", "DROP TABLE jobs"), "readonly")
    one_line_error(run("sql", "SELEC 1"), "syntax error")
    one_line_error(run("list", "--since", "yesterday"), "--since", code=2)  # a usage error
    one_line_error(run("list", "--since", "99999999999d"), "--since", code=2)
    one_line_error(run("register", sample_job, "--layout", "nope"), "layout")
    after = run("sql", "SELECT (SELECT count(*) FROM jobs) || '/' || (SELECT count(*) FROM outputs) AS n", "--csv").stdout
    assert before == after == "n\n1/12\n"


def test_usage_errors_exit_2(run):
    assert run("missing").exit_code == 2
    assert run("register", "x.json", "--seed-policy", "sometimes").exit_code == 2
    assert run("nonsense").exit_code == 2


def test_console_script_runs_as_a_real_process(db_path, sample_job, tmp_path):
    cmd = [sys.executable, "-m", "jobledger"]
    env = {**os.environ, "JOBLEDGER_DB": str(db_path)}
    done = subprocess.run(cmd + ["register", sample_job, "--store", str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "12 expected outputs" in done.stdout, done.stderr
    failed = subprocess.run(cmd + ["status", "job-00000000"], env=env, capture_output=True, text=True)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip() == "error: unknown job id 'job-00000000'"


def test_read_commands_do_not_import_the_cloud_sdks(db_path, sample_job, tmp_path):
    """`status` and friends must start fast: azure, kubernetes, yaml, jinja2 and datasette load only where used."""
    code = ("import sys\nfrom jobledger.cli import main\n"
            "try:\n    main(['register', sys.argv[1], '--store', sys.argv[2]])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['status', 'job-5a11e0c3'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
            "               & {'azure', 'kubernetes', 'yaml', 'sqlite_utils', 'jinja2', 'datasette'})\n"
            "print('HEAVY', heavy)\n")
    env = {**os.environ, "JOBLEDGER_DB": str(db_path)}
    done = subprocess.run([sys.executable, "-c", code, sample_job, str(tmp_path)], env=env, capture_output=True,
                          text=True)
    assert "status          scheduled" in done.stdout and "HEAVY []" in done.stdout, done.stderr
