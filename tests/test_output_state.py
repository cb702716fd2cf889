"""One definition of an output's state (layout.output_state): the classification SQL that
validation runs and the Python the idempotent runner uses agree, on every combination of
marker files and on the worker-written sample tree."""
from __future__ import annotations

import itertools
import json
import os
import sqlite3

from jobledger import api
from jobledger.idempotent import is_verified, verified_paths
from jobledger.layout import ERROR_FILE, METADATA_FILE, RESULT_FILE, output_state
from jobledger.ledger import Ledger
from jobledger.observe import directory_row, state_case_sql
from jobledger.stores import open_store

JOB = "job-5a11e0c3"
NAMES = (RESULT_FILE, ERROR_FILE, METADATA_FILE, "artifact_incidence.arrow")


def sql_state(rows: list[tuple], directory: str) -> str:
    """The state SQLite computes for ``directory`` from listing rows, with the validation's own expression."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE listing (dir TEXT, has_result INTEGER, has_error INTEGER, "
                 "has_metadata INTEGER, files INTEGER, outputs TEXT)")
    conn.executemany("INSERT INTO listing VALUES (?,?,?,?,?,?)", rows)
    conn.execute("CREATE TABLE outputs (path TEXT)")
    conn.execute("INSERT INTO outputs VALUES (?)", (directory,))
    return conn.execute(f"SELECT {state_case_sql('l')} FROM outputs o LEFT JOIN listing l ON l.dir = o.path"
                        ).fetchone()[0]


def test_sql_and_python_agree_on_every_combination_of_files():
    seen = set()
    for n in range(len(NAMES) + 1):
        for names in itertools.combinations(NAMES, n):
            rows = [directory_row("d", list(names))] if names else []  # a listing has no empty directories
            python = output_state(names)
            assert sql_state(rows, "d") == python, names
            seen.add(python)
    assert seen == {"missing", "verified", "errored", "incomplete"}
    # the rules themselves, spelled out once more as the README states them
    assert output_state([]) == "missing"
    assert output_state([METADATA_FILE, RESULT_FILE]) == "verified"
    assert output_state([RESULT_FILE, ERROR_FILE]) == "errored"
    assert output_state([METADATA_FILE, "artifact_incidence.arrow"]) == "incomplete"


def test_validation_and_the_idempotent_runner_agree_on_the_sample(db_path, spec_dir, sample_tree):
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    with Ledger(db_path) as ledger:
        api.register(ledger, spec_dir / "sample" / f"{JOB}.json", store=str(sample_tree))
        api.validate_job(ledger, JOB)
        rows = ledger.query("SELECT path, state FROM outputs WHERE job_id = ?", (JOB,))
        recorded = {r["path"]: r["state"] for r in rows}
    from_files = {path: output_state(os.listdir(sample_tree / path) if (sample_tree / path).is_dir() else [])
                  for path in recorded}
    assert recorded == from_files
    assert {p for p, s in recorded.items() if s == "verified"} == set(truth["verified"])
    assert {p for p, s in recorded.items() if s == "errored"} == set(truth["errored"])
    assert {p for p, s in recorded.items() if s == "incomplete"} == set(truth["incomplete"])
    store = open_store(str(sample_tree))
    assert verified_paths(store, recorded) == set(truth["verified"])
    assert {p for p in recorded if is_verified(store, p)} == set(truth["verified"])
