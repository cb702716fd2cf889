"""Typed results: one JSON shape per command whatever path was taken, and warnings shown, not silenced."""
from __future__ import annotations

import json

from helpers import cli

from jobledger import api
from jobledger.ledger import Ledger

JOB = "job-5a11e0c3"


def register_sample(db_path, spec_dir, store) -> None:
    cli("--db", db_path, "register", spec_dir / "sample" / f"{JOB}.json", "--store", store)


def finish(db_path, job_id) -> None:
    with Ledger(db_path) as ledger:
        ledger.transition(job_id, "running", "test: started")
        ledger.transition(job_id, "validating", "test: finished")


def test_validate_json_has_one_shape_whether_or_not_the_job_was_revalidated(db_path, spec_dir, sample_tree):
    register_sample(db_path, spec_dir, sample_tree)
    finish(db_path, JOB)
    validated = json.loads(cli("--db", db_path, "validate", JOB, "--json", ok=(3,)).stdout)
    kept = json.loads(cli("--db", db_path, "validate", JOB, "--json", ok=(3,)).stdout)
    assert validated["validated"] is True and kept["validated"] is False
    assert list(validated) == list(kept)
    assert (kept["run_id"], kept["last_run_id"], kept["strategy"]) == (None, validated["run_id"], None)
    assert kept["note"].endswith("(use --force to re-validate)")


def test_sync_json_has_one_shape_for_changed_and_unchanged_jobs(db_path, spec_dir, sample_tree, golden,
                                                                tmp_path):
    register_sample(db_path, spec_dir, sample_tree)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(golden["simjob_spec_example"]))
    cli("--db", db_path, "register", other, "--store", tmp_path / "empty-store")
    finish(db_path, JOB)
    records = {r["job_id"]: r for r in json.loads(cli("--db", db_path, "sync", "--json").stdout)}
    changed, unchanged = records[JOB], records["job-deadbeef"]
    assert list(changed) == list(unchanged)
    assert changed["path"] == ["validating", "partial"] and changed["changed"] is True
    assert (changed["verified"], changed["missing"], changed["errored"], changed["incomplete"]) == (9, 1, 1,
                                                                                                    1)
    assert unchanged["path"] == ["scheduled"] and unchanged["changed"] is False
    assert unchanged["verified"] is None


def test_sync_returns_new_records_and_renders_nothing(db_path, spec_dir, sample_tree, capsys):
    register_sample(db_path, spec_dir, sample_tree)
    finish(db_path, JOB)
    with Ledger(db_path) as ledger:
        (change,) = api.sync_jobs(ledger, [JOB])
    assert capsys.readouterr().out == ""
    assert (change.from_status, change.to, change.path, change.validated) == \
        ("validating", "partial", ("validating", "partial"), True)
    assert change.as_dict()["from"] == "validating"


def test_a_bundle_warning_is_one_warning_line_and_part_of_the_result(db_path, golden, tmp_path):
    spec = dict(golden["simjob_spec_example"])
    digest = spec["bundle_ref"].split("@", 1)[1]
    spec["bundle_ref"] = f"localhost:5000/models@{digest}"
    spec["tasks"] = [{**t, "bundle_ref": spec["bundle_ref"]} for t in spec["tasks"]]
    path = tmp_path / "ported.json"
    path.write_text(json.dumps(spec))
    result = cli("--db", db_path, "register", path, "--store", tmp_path / "store")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: bundle_ref 'localhost:5000/models@") \
        and "registry port" in lines[0]
    with Ledger(db_path) as ledger:
        again = api.register(ledger, str(path), store=str(tmp_path / "store"))
    assert again.created is False and len(again.warnings) == 1
    assert again.as_dict()["warnings"] == again.warnings
