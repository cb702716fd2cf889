"""The scan strategy classifies exactly as the list strategy (a walk of every directory) did, on a
generated tree with every state and every kind of stray directory, with and without worker processes,
on a first validation and on the next one after the store changed; and it records the same."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from jobledger import api, scan, states
from jobledger.layout import ERROR_FILE, METADATA_FILE, RESULT_FILE
from jobledger.ledger import Ledger
from jobledger.validation import ValidationError, validate_job

BUNDLE = "sha256:" + "d" * 64
TARGET = "targets.prev/loss"
JOB = "job-00005ca2"

# What a result directory can hold, and what it should be classified as.
KINDS = {
    "verified": [METADATA_FILE, "artifact_incidence.arrow", RESULT_FILE],
    "verified, result only": [RESULT_FILE],
    "errored": [METADATA_FILE, ERROR_FILE, RESULT_FILE],
    "errored, no result": [METADATA_FILE, ERROR_FILE],
    "incomplete, metadata only": [METADATA_FILE],
    "incomplete, one artifact": ["artifact_incidence.arrow"],
    "incomplete, temp file": [METADATA_FILE, ".result.json.tmp"],
    "empty directory": [],
    "only a subdirectory": None,
    "missing": (),
}
NESTED = {"only a subdirectory"}  # a result directory inside a directory: only for strays (see the last test)


def write_dir(folder: Path, kind: str) -> None:
    files = KINDS[kind]
    if files == ():
        return
    folder.mkdir(parents=True, exist_ok=True)
    if files is None:
        (folder / "nested").mkdir()
        (folder / "nested" / RESULT_FILE).write_text("{}")
        return
    for name in files:
        (folder / name).write_text("x")


def build(tmp_path: Path, rng: random.Random) -> tuple[Path, Path]:
    """A registered study and its tree."""
    store = tmp_path / "store"
    db = tmp_path / "pristine.db"
    spec = {
        "model": "models.seir",
        "scenario": "baseline",
        "n_replicates": 4,
        "outputs": ["incidence"],
        "parameter_sets": [{"beta": i / 100} for i in range(60)],
    }
    with Ledger(db) as ledger:
        api.register(ledger, spec, bundle=BUNDLE, job_id=JOB, store=str(store))
        rows = ledger.query("SELECT path, kind FROM outputs WHERE job_id = ? ORDER BY output_id", (JOB,))
    paths = [r["path"] for r in rows]
    for path in paths:
        write_dir(store / path, rng.choice(sorted(set(KINDS) - NESTED)))
    (store / paths[2]).mkdir(parents=True, exist_ok=True)
    (store / paths[2] / "logs").mkdir()  # a subdirectory that is no result directory: still missing
    (store / paths[2] / "logs" / "run.log").write_text("x")
    parents = sorted({p.rpartition("/")[0] for p in paths})
    for parent in rng.sample(parents, 8):  # whole parameter sets never run
        shutil.rmtree(store / parent, ignore_errors=True)
    for i, parent in enumerate(rng.sample(parents, 10)):  # strays beside expected outputs
        write_dir(store / parent / f"seed_{900 + i}", rng.choice(list(KINDS)))
    sims = paths[0].split("/params_")[0].rsplit("/", 2)[0]  # token/v1/sims/<bundle>
    write_dir(store / sims / "ab/cd/params_0badc0de/seed_1", "verified")  # a parameter set of no job here
    write_dir(store / sims / "ab/cd/params_0badc0de/seed_2", "incomplete, metadata only")
    write_dir(store / sims / "ab/cd/params_0badc0de/seed_3", "incomplete, one artifact")  # not a result dir
    (store / sims / "ab" / "notes.txt").write_text("stray file in a shard directory")
    (store / parents[1]).mkdir(parents=True, exist_ok=True)
    (store / parents[1] / "seed_777").write_text("a file where a result directory would be")
    write_dir(store / sims / "ab" / "seed_5", "errored")  # a result directory at an odd depth
    return db, store


def copy_ledger(pristine: Path, target: Path) -> Path:
    source, copy = sqlite3.connect(pristine), sqlite3.connect(target)
    source.backup(copy)
    source.close(), copy.close()
    return target


def recorded(db: Path) -> dict:
    """Everything a validation writes about outputs, keyed by path (ids are the same in both copies)."""
    with Ledger(db, readonly=True) as ledger:
        return {
            "states": ledger.query(
                "SELECT path, state, detail FROM outputs WHERE job_id = ? ORDER BY path", (JOB,)
            ),
            "unexpected": [
                r["path"] for r in ledger.query("SELECT path FROM unexpected_paths ORDER BY path")
            ],
            "events": ledger.query(
                "SELECT o.path, e.from_state, e.to_state, e.detail FROM output_events e "
                "JOIN outputs o USING (output_id) ORDER BY o.path"
            ),
            "runs": ledger.query(
                "SELECT expected, verified, missing, errored, incomplete, unexpected "
                "FROM validation_runs ORDER BY run_id"
            ),
            "history": ledger.query(
                "SELECT path, first_verified_run, last_seen_run, state_run FROM outputs "
                "WHERE job_id = ? ORDER BY path",
                (JOB,),
            ),
        }


def change_the_store(store: Path, rng: random.Random) -> None:
    """What happens between validations: outputs finish, fail, vanish, strays come and go."""
    dirs = sorted(p for p in store.rglob("seed_*") if p.is_dir())
    for folder in rng.sample(dirs, 12):
        shutil.rmtree(folder)
    for folder in rng.sample([d for d in dirs if d.exists()], 12):
        for name in KINDS[rng.choice(["verified", "errored", "incomplete, metadata only"])]:
            (folder / name).write_text("y")
    write_dir(store / sorted(dirs)[0].parent / "seed_123456", "verified")


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 3])
def test_scan_classifies_and_records_exactly_as_the_list_walk(tmp_path, monkeypatch, seed, workers):
    rng = random.Random(seed)
    pristine, store = build(tmp_path, rng)
    monkeypatch.setattr(scan, "PARALLEL_MIN_OUTPUTS", 0)
    monkeypatch.setattr(scan.os, "cpu_count", lambda: workers)
    ledgers = {s: copy_ledger(pristine, tmp_path / f"{s}.db") for s in ("list", "scan")}
    for round_ in range(2):
        results = {}
        for strategy, db in ledgers.items():
            with Ledger(db) as ledger:
                results[strategy] = validate_job(ledger, JOB, strategy=strategy, force=True)
        list_run, scan_run = results["list"], results["scan"]
        assert scan_run.strategy == "scan" and list_run.strategy == "list"
        for field in ("expected", "verified", "missing", "errored", "incomplete", "unexpected", "changed"):
            assert getattr(scan_run, field) == getattr(list_run, field), (round_, field)
        assert recorded(ledgers["scan"]) == recorded(ledgers["list"])
        if round_ == 0:
            observed = {r["state"] for r in recorded(ledgers["scan"])["states"]}
            assert observed == set(states.OUTPUT_STATES) - {"stale"}  # every simulation state is in the tree
            assert scan_run.unexpected >= 3  # at least: two in a foreign param set, one at an odd depth
            change_the_store(store, rng)


def test_scan_of_an_unchanged_store_writes_only_the_run(tmp_path, monkeypatch):
    pristine, store = build(tmp_path, random.Random(7))
    monkeypatch.setattr(scan, "PARALLEL_MIN_OUTPUTS", 0)
    db = copy_ledger(pristine, tmp_path / "scan.db")
    with Ledger(db) as ledger:
        first = validate_job(ledger, JOB, strategy="scan", force=True)
        states_before = ledger.query("SELECT * FROM output_states ORDER BY output_id")
        again = validate_job(ledger, JOB, strategy="scan", force=True)
        assert again.changed == 0 and first.changed > 0
        assert ledger.query("SELECT * FROM output_states ORDER BY output_id") == states_before
        assert ledger.query("SELECT count(*) AS n FROM output_events")[0]["n"] == 0
        assert (again.verified, again.missing, again.unexpected) == (
            first.verified,
            first.missing,
            first.unexpected,
        )


def test_a_run_recorded_meanwhile_makes_the_scan_compare_every_output(tmp_path, monkeypatch):
    """The scan compares with the ledger before recording; if another validation recorded in between,
    every output is compared again, so the ledger ends up holding this run's whole observation."""
    pristine, store = build(tmp_path, random.Random(11))
    db = copy_ledger(pristine, tmp_path / "scan.db")
    original = scan.scan

    def scan_then_someone_else_validates(*args, **kwargs):
        scanned = original(*args, **kwargs)
        with Ledger(db) as other:  # a second process validates a changed store before this one records
            victim = other.query(
                "SELECT path FROM outputs WHERE job_id = ? AND state = 'verified' LIMIT 1", (JOB,)
            )
            if victim:
                (store / victim[0]["path"] / RESULT_FILE).rename(store / "moved-away.json")
                validate_job(other, JOB, strategy="list", force=True)
                (store / "moved-away.json").rename(store / victim[0]["path"] / RESULT_FILE)
        return scanned

    with Ledger(db) as ledger:
        validate_job(ledger, JOB, strategy="scan", force=True)
        monkeypatch.setattr("jobledger.validation.scan", scan_then_someone_else_validates)
        mine = validate_job(ledger, JOB, strategy="scan", force=True)
        summary = ledger.summary(JOB)
        assert (summary["verified"], summary["missing"]) == (mine.verified, mine.missing)


def test_scan_does_not_look_inside_expected_result_directories(tmp_path):
    """The one difference from the list walk: a result directory nested inside an expected output's
    directory is not reported as unexpected (the scan probes an output's markers, it does not read it)."""
    pristine, store = build(tmp_path, random.Random(5))
    with Ledger(pristine) as ledger:
        path = ledger.query("SELECT path FROM outputs WHERE job_id = ? LIMIT 1", (JOB,))[0]["path"]
    shutil.rmtree(store / path, ignore_errors=True)
    write_dir(store / path, "only a subdirectory")
    found = {}
    for strategy in ("list", "scan"):
        with Ledger(copy_ledger(pristine, tmp_path / f"{strategy}.db")) as ledger:
            validate_job(ledger, JOB, strategy=strategy, force=True)
            state = ledger.query("SELECT state FROM outputs WHERE path = ?", (path,))[0]["state"]
            found[strategy] = (state, {r["path"] for r in ledger.query("SELECT path FROM unexpected_paths")})
    assert found["list"][0] == found["scan"][0] == "missing"
    assert found["list"][1] - found["scan"][1] == {f"{path}/nested"}


def test_jobs_with_targets_are_listed_not_scanned(tmp_path, db_path):
    """An aggregation is decided by the output names its replicates returned, which only reading their
    directories shows: auto lists such a job, and an explicit --strategy scan is refused."""
    spec = {
        "model": "models.seir",
        "scenario": "baseline",
        "n_replicates": 2,
        "outputs": ["incidence"],
        "targets": [TARGET],
        "parameter_sets": [{"beta": 0.1}],
    }
    with Ledger(db_path) as ledger:
        api.register(ledger, spec, bundle=BUNDLE, job_id=JOB, store=str(tmp_path / "store"))
        (tmp_path / "store").mkdir()
        assert validate_job(ledger, JOB).strategy == "list"
        with pytest.raises(ValidationError, match="scan cannot decide aggregations"):
            validate_job(ledger, JOB, strategy="scan", force=True)


def test_the_command_line_offers_every_strategy_and_scans_when_asked(db_path, spec_dir, sample_tree):
    """`validate --strategy scan` (the README's strategy for a local directory) reaches the scan: the
    sample job scanned on request classifies as its truth.json; a job with targets refuses it in one
    line."""
    import json

    from helpers import cli

    from jobledger.cli import main
    strategy = next(p for p in main.commands["validate"].params if p.name == "strategy")
    assert tuple(strategy.type.choices) == api.STRATEGIES == ("auto", "scan", "list", "head")
    job = "job-5a11e0c3"
    cli("register", spec_dir / "sample" / f"{job}.json", "--store", sample_tree)
    explained = json.loads(cli("validate", job, "--explain", "--strategy", "scan", "--json").stdout)
    assert explained["strategy"] == "scan"
    result = json.loads(cli("validate", job, "--force", "--strategy", "scan", "--json", ok=(3,)).stdout)
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    assert (result["strategy"], result["verified"], result["errored"], result["incomplete"],
            result["unexpected"]) == ("scan", len(truth["verified"]), len(truth["errored"]),
                                      len(truth["incomplete"]), len(truth["unexpected"]))
    worker = spec_dir / "upstream" / "worker-job-c400000a"
    cli("register", worker / "job-c400000a.json", "--store", worker / "provenance")
    refused = cli("validate", "job-c400000a", "--strategy", "scan", ok=(1,))
    assert refused.stderr.startswith("error: ") and "scan cannot decide aggregations" in refused.stderr
    assert refused.stderr.count("\n") == 1
