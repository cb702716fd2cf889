"""Every user flow ends in a right answer (issue 10): each test walks one flow a user tried,
through the CLI, from the first command to the answer they trust jobledger for."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli
from test_local_runtime import wait_for_exit

SAMPLE_JOB = "job-5a11e0c3"
BUNDLE = "sha256:" + "5e" * 32
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "scripts" / "example_model"


# ------------------------------------------------------------------ helpers

def jl(db: Path, *args, registry: str | None = None, ok=(0,)):
    """The CLI on ledger ``db`` (and ``registry`` when given)."""
    return cli("--db", db, *(["--registry", registry] if registry else []), *args, ok=ok)


def status_doc(db: Path, job_id: str) -> dict:
    return json.loads(jl(db, "status", job_id, "--json").stdout)


def history(db: Path, job_id: str) -> list[tuple]:
    return [(h["from_status"], h["to_status"], h["reason"])
            for h in json.loads(jl(db, "history", job_id, "--json").stdout)]


def sql_rows(db: Path, query: str) -> list[dict]:
    return json.loads(jl(db, "sql", query, "--json").stdout)


def run_dir_ref(db: Path, job_id: str) -> str:
    return sql_rows(db, f"SELECT runtime_ref FROM jobs WHERE job_id = '{job_id}'")[0]["runtime_ref"]


def run_dir_of(db: Path, job_id: str) -> Path:
    return Path(json.loads(run_dir_ref(db, job_id))["run_dir"])


def make_bundle(directory: Path, module: str, source: str) -> Path:
    """A bundle directory holding the dotted ``module`` (its packages get empty __init__.py files)."""
    *packages, name = module.split(".")
    here = directory
    for package in packages:
        here = here / package
        here.mkdir(parents=True, exist_ok=True)
        (here / "__init__.py").write_text("")
    (here / f"{name}.py").write_text(source)
    return directory


def study(path: Path, model: str, scenario: str, parameter_sets: list[dict], n_replicates: int = 1) -> Path:
    path.write_text(json.dumps({"model": model, "scenario": scenario, "parameter_sets": parameter_sets,
                                "n_replicates": n_replicates, "outputs": ["incidence", "prevalence"]}))
    return path


def submit_local(db: Path, spec: Path, store: Path, bundle_path: Path, *extra,
                 registry: str | None = None) -> str:
    out = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store, "--bundle-path",
             bundle_path, "--json", *extra, registry=registry)
    return json.loads(out.stdout)["job_id"]


@pytest.fixture
def seir_bundle(tmp_path) -> Path:
    """A bundle directory whose entrypoint is the sample job's `models.seir.StochasticSEIR/baseline`."""
    return make_bundle(tmp_path / "seir-bundle", "models.seir", (
        "import json\n\n"
        "class StochasticSEIR:\n"
        "    @staticmethod\n"
        "    def baseline(params, seed):\n"
        "        days = int(params['n_days'])\n"
        "        return {'incidence': json.dumps([seed % 7] * days).encode(),\n"
        "                'prevalence': json.dumps([seed % 5] * days).encode()}\n"))


@pytest.fixture
def truth(spec_dir) -> dict:
    return json.loads((spec_dir / "sample" / "truth.json").read_text())


@pytest.fixture
def sample_spec(spec_dir) -> Path:
    return spec_dir / "sample" / "job-5a11e0c3.json"


# ------------------------------------------------------------------ 1. jobs with no runtime

def test_1_readme_first_example_runs_end_to_end(tmp_path, sample_spec, sample_tree, seir_bundle, truth):
    """register → validate → missing → resume → validate: a job ModelOps ran gets a verdict."""
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree)
    out = jl(db, "validate", SAMPLE_JOB, ok=(3,)).stdout
    assert "partial" in out and "(no transition)" not in out
    assert history(db, SAMPLE_JOB) == [
        (None, "scheduled", "registered (submitted elsewhere)"),
        ("scheduled", "validating", "no runtime: decided from the artifacts"),
        ("validating", "partial", history(db, SAMPLE_JOB)[-1][2])]
    doc = status_doc(db, SAMPLE_JOB)
    assert (doc["status"], doc["verified"], doc["missing"], doc["errored"], doc["incomplete"]) == \
        ("partial", 9, 1, 1, 1)

    not_verified = sorted(jl(db, "missing", SAMPLE_JOB, "--format", "paths").stdout.split())
    assert not_verified == sorted(truth["missing"] + truth["errored"] + truth["incomplete"])

    out = jl(db, "resume", SAMPLE_JOB, "--runtime", "local", "--bundle-path", seir_bundle).stdout
    child = f"{SAMPLE_JOB}-r1"
    assert f"{child}: scheduled (3 expected outputs)" in out
    assert wait_for_exit(db, child)["ran"] == 3
    assert jl(db, "sync").stdout.strip() == f"{child}: scheduled → validating → succeeded (3 verified)"
    # The re-run replaced the errored and the half-written directories: the root is complete now.
    jl(db, "validate", "--force", SAMPLE_JOB)
    doc = status_doc(db, SAMPLE_JOB)
    assert (doc["status"], doc["verified"]) == ("succeeded", 12)


def test_1_validate_force_decides_any_unfinished_job_and_says_what_the_runtime_last_said(
        tmp_path, sample_spec, sample_tree):
    db = tmp_path / "ledger.db"
    # A job with Kubernetes coordinates waits for its runtime: plain validate only reports progress.
    jl(db, "register", sample_spec, "--store", sample_tree, "--namespace", "modelops")
    out = jl(db, "validate", SAMPLE_JOB, ok=(3,)).stdout
    assert "scheduled (no transition)" in out
    assert status_doc(db, SAMPLE_JOB)["status"] == "scheduled"
    # --force decides it now from the artifacts, and the history says what the runtime last said.
    jl(db, "validate", "--force", SAMPLE_JOB, ok=(3,))
    moves = history(db, SAMPLE_JOB)
    assert [(m[0], m[1]) for m in moves] == [(None, "scheduled"), ("scheduled", "validating"),
                                            ("validating", "partial")]
    assert "--force" in moves[1][2] and "registered (submitted elsewhere)" in moves[1][2]


def test_1_cancel_of_a_job_without_runtime_only_records_it(tmp_path, sample_spec, sample_tree):
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree)
    out = jl(db, "cancel", SAMPLE_JOB).stdout
    assert out.startswith(f"{SAMPLE_JOB}: cancelled") and "nothing was stopped" in out
    assert status_doc(db, SAMPLE_JOB)["status"] == "cancelled"


# ------------------------------------------------------------------ 2. two machines, one local worker

@pytest.fixture
def gated_bundle(tmp_path) -> Path:
    """A model that waits until the file named by params['gate'] exists."""
    return make_bundle(tmp_path / "gated", "gated.model", (
        "import os, time\n\n"
        "def wait(params, seed):\n"
        "    deadline = time.time() + 120\n"
        "    while not os.path.exists(params['gate']) and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return {'incidence': b'[1]', 'prevalence': b'[2]'}\n"))


def test_2_only_the_host_running_a_local_worker_decides_it(tmp_path, gated_bundle, monkeypatch):
    registry = f"file://{tmp_path / 'registry'}"
    a, b = tmp_path / "alpha" / "ledger.db", tmp_path / "beta" / "ledger.db"
    gate = tmp_path / "gate"
    spec = study(tmp_path / "study.json", "gated.model", "wait", [{"gate": str(gate), "k": 1}],
                 n_replicates=2)

    monkeypatch.setenv("JOBLEDGER_HOST", "alpha")
    job_id = submit_local(a, spec, tmp_path / "store", gated_bundle, registry=registry)
    assert jl(a, "sync", registry=registry).stdout.strip() == f"{job_id}: scheduled → running"

    monkeypatch.setenv("JOBLEDGER_HOST", "beta")
    jl(b, "pull", registry=registry)
    out = jl(b, "sync", registry=registry).stdout
    assert f"{job_id}: running on alpha" in out
    assert status_doc(b, job_id)["status"] == "running"
    refused = jl(b, "cancel", job_id, registry=registry, ok=(1,))
    assert "alpha" in refused.stderr and status_doc(b, job_id)["status"] == "running"

    gate.touch()  # the worker on alpha finishes all of its outputs
    monkeypatch.setenv("JOBLEDGER_HOST", "alpha")
    assert wait_for_exit(a, job_id)["ran"] == 2
    monkeypatch.setenv("JOBLEDGER_HOST", "beta")
    assert f"{job_id}: running on alpha" in jl(b, "sync", registry=registry).stdout  # B still leaves it alone
    monkeypatch.setenv("JOBLEDGER_HOST", "alpha")
    assert jl(a, "sync", registry=registry).stdout.strip() == \
        f"{job_id}: running → validating → succeeded (2 verified)"
    monkeypatch.setenv("JOBLEDGER_HOST", "beta")  # B's next sync takes the verdict alpha made
    assert jl(b, "sync", registry=registry).stdout.strip() == f"{job_id}: running → succeeded (2 verified)"
    doc = status_doc(b, job_id)
    assert (doc["status"], doc["verified"]) == ("succeeded", 2)
    assert "partial" not in [m[1] for m in history(b, job_id)]


def test_2_a_worker_from_before_a_reboot_is_gone(tmp_path, gated_bundle, monkeypatch):
    """Same host name, another boot id: the recorded pid cannot be that worker any more, even when a
    process with that pid (and start time) is alive now."""
    from jobledger.runtimes.local import _proc_stat
    monkeypatch.setenv("JOBLEDGER_HOST", "alpha")
    db = tmp_path / "ledger.db"
    gate = tmp_path / "gate"
    gate.touch()
    spec = study(tmp_path / "study.json", "gated.model", "wait", [{"gate": str(gate)}])
    job_id = submit_local(db, spec, tmp_path / "store", gated_bundle)
    wait_for_exit(db, job_id)
    ref = json.loads(run_dir_ref(db, job_id))
    assert ref["host"] == "alpha"
    assert ref["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (Path(ref["run_dir"]) / "exit.json").unlink()  # the machine went down before the worker recorded its exit
    alive = {**ref, "pid": os.getpid(), "start_time": _proc_stat(os.getpid())[1]}  # a live process's pid

    def recorded(runtime_ref: dict) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE jobs SET runtime_ref = ? WHERE job_id = ?",
                         (json.dumps(runtime_ref), job_id))

    recorded(alive)  # in this boot, a live process with the recorded pid and start time is the worker
    assert jl(db, "sync").stdout.strip() == f"{job_id}: scheduled → running"
    recorded({**alive, "boot_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12})  # recorded before a reboot
    assert jl(db, "sync").stdout.strip() == f"{job_id}: running → validating → succeeded (1 verified)"
    assert "rebooted" in history(db, job_id)[-2][2]


# ------------------------------------------------------------------ 3. retries that give up

@pytest.fixture
def failing_bundle(tmp_path) -> Path:
    """``flaky.model/run``: raises, except for params['x'] == 5 once the file params['ok'] exists."""
    return make_bundle(tmp_path / "flaky", "flaky.model", (
        "import os\n\n"
        "def run(params, seed):\n"
        "    if params['x'] == 5 and os.path.exists(params['ok']):\n"
        "        return {'incidence': b'[1]', 'prevalence': b'[1]'}\n"
        "    raise RuntimeError(f\"boom {params['x']}\")\n"))


def test_3_resume_gives_up_after_max_attempts_per_output(tmp_path, failing_bundle):
    db = tmp_path / "ledger.db"
    ok = tmp_path / "ok"
    spec = study(tmp_path / "study.json", "flaky.model", "run",
                 [{"x": x, "ok": str(ok)} for x in range(1, 6)])
    root = submit_local(db, spec, tmp_path / "store", failing_bundle)
    wait_for_exit(db, root)
    line = jl(db, "sync").stdout.strip()
    assert line == f"{root}: scheduled → validating → failed (0 verified, 5 errored)"
    ok.touch()  # from now on x == 5 succeeds: only the other four keep failing
    for generation in (1, 2):
        child = f"{root}-r{generation}"
        out = jl(db, "resume", root).stdout
        assert f"{child}: scheduled" in out
        wait_for_exit(db, child)
        jl(db, "sync")
    assert status_doc(db, f"{root}-r1")["verified"] == 1  # x == 5 came back on its second attempt
    assert status_doc(db, f"{root}-r2")["expected"] == 4

    # Four outputs came back errored in three generations: resume leaves them out and says so.
    refused = jl(db, "resume", root, ok=(1,))
    assert "4 outputs given up after 3 attempts" in refused.stderr
    assert "--max-attempts" in refused.stderr
    plan = json.loads(jl(db, "resume", f"{root}-r2", "--dry-run", "--json").stdout)  # counted over the tree
    assert (plan["outputs"], plan["given_up"], plan["jobs"]) == (0, 4, [])
    doc = status_doc(db, root)
    assert doc["given_up"] == 4
    assert "given up" in jl(db, "status", root).stdout
    # A higher limit tries them again.
    plan = json.loads(jl(db, "resume", root, "--max-attempts", "4", "--dry-run", "--json").stdout)
    assert plan["outputs"] == 4
    assert sql_rows(db, "SELECT count(*) AS n FROM jobs")[0]["n"] == 3  # nothing was written by the refusals


def test_3_resume_reason_chooses_what_to_rerun(tmp_path):
    db = tmp_path / "ledger.db"
    store = tmp_path / "store"
    spec = study(tmp_path / "study.json", "models.sir", "baseline",
                 [{"beta": 0.3, "gamma": 0.1}, {"beta": 5.0, "gamma": 0.1}], n_replicates=2)
    job_id = submit_local(db, spec, store, EXAMPLE_MODEL)
    wait_for_exit(db, job_id)
    jl(db, "sync")
    lost = [r["path"] for r in sql_rows(db, f"SELECT path FROM outputs WHERE job_id = '{job_id}' "
                                            f"AND state = 'verified' ORDER BY output_id")][0]
    shutil.rmtree(store / lost)
    jl(db, "validate", "--force", job_id, ok=(3,))
    assert (status_doc(db, job_id)["missing"], status_doc(db, job_id)["errored"]) == (1, 2)

    def planned(*args) -> list[str]:
        plan = json.loads(jl(db, "resume", job_id, "--dry-run", "--json", *args).stdout)
        return [t["seed"] for j in plan["jobs"] for t in j["tasks"]]

    assert len(planned("--reason", "missing")) == 1
    assert len(planned("--reason", "errored")) == 2
    assert len(planned("--reason", "missing,incomplete,errored")) == 3
    assert len(planned()) == 3
    bad = jl(db, "resume", job_id, "--reason", "missing,bogus", "--dry-run", ok=(2,))
    assert "bogus" in bad.stderr


# ------------------------------------------------------------------ 4. unchecked outputs

def test_4_outputs_never_checked_are_unchecked_not_missing(tmp_path, sample_spec, sample_tree, truth):
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree)
    doc = status_doc(db, SAMPLE_JOB)
    assert (doc["expected"], doc["unchecked"], doc["missing"], doc["verified"]) == (12, 12, 0, 0)
    text = jl(db, "status", SAMPLE_JOB).stdout
    assert "not validated yet" in text and "0.0%" not in text
    listed = jl(db, "missing", SAMPLE_JOB, "--format", "json")
    assert {r["reason"] for r in json.loads(listed.stdout)} == {"unchecked"}
    assert len(json.loads(listed.stdout)) == 12
    assert "no validation has run" in listed.stderr
    assert json.loads(jl(db, "missing", SAMPLE_JOB, "--reason", "missing", "--format", "json").stdout) == []
    summary = sql_rows(db, "SELECT expected, verified, missing, unchecked FROM job_summary")
    assert summary == [{"expected": 12, "verified": 0, "missing": 0, "unchecked": 12}]

    jl(db, "validate", SAMPLE_JOB, ok=(3,))
    doc = status_doc(db, SAMPLE_JOB)
    counts = (doc["unchecked"], doc["verified"], doc["missing"], doc["errored"], doc["incomplete"])
    assert counts == (0, 9, 1, 1, 1)
    listed = jl(db, "missing", SAMPLE_JOB, "--format", "json")
    rows = json.loads(listed.stdout)
    assert sorted(r["path"] for r in rows if r["reason"] == "missing") == truth["missing"]
    assert listed.stderr == ""


# ------------------------------------------------------------------ 5. two ledgers, one directory

def test_5_two_ledgers_in_one_directory_run_the_same_job(tmp_path):
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    job_a = submit_local(a, spec, tmp_path / "store-a", EXAMPLE_MODEL)
    job_b = submit_local(b, spec, tmp_path / "store-b", EXAMPLE_MODEL)
    assert job_a == job_b
    assert run_dir_of(a, job_a) != run_dir_of(b, job_b)
    assert wait_for_exit(a, job_a)["ran"] == 1 and wait_for_exit(b, job_b)["ran"] == 1
    for db in (a, b):
        line = jl(db, "sync").stdout.strip()
        assert line == f"{job_a}: scheduled → validating → succeeded (1 verified)"


def test_5_a_job_whose_submit_failed_before_the_runtime_took_it_may_be_submitted_again(tmp_path):
    db = tmp_path / "ledger.db"
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's parent directory should be")
    store = blocker / "store"
    failed = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store,
                "--bundle-path", EXAMPLE_MODEL, ok=(1,))
    assert "submit failed" in failed.stderr
    job_id = sql_rows(db, "SELECT job_id, status FROM jobs")[0]["job_id"]
    assert status_doc(db, job_id)["status"] == "failed"
    blocker.unlink()
    out = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store,
             "--bundle-path", EXAMPLE_MODEL).stdout
    assert "→ scheduled" in out
    assert wait_for_exit(db, job_id)["ran"] == 1
    assert "succeeded (1 verified)" in jl(db, "sync").stdout
    assert [m[1] for m in history(db, job_id)] == ["pending", "submitting", "failed", "submitting",
                                                   "scheduled", "validating", "succeeded"]


def test_5_a_run_directory_left_from_an_earlier_ledger_is_refused_before_anything_is_written(tmp_path):
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    db = tmp_path / "ledger.db"
    job_id = submit_local(db, spec, tmp_path / "store", EXAMPLE_MODEL)
    run_dir = run_dir_of(db, job_id)
    wait_for_exit(db, job_id)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # the user starts a new ledger in the same place
    refused = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", tmp_path / "store",
                 "--bundle-path", EXAMPLE_MODEL, ok=(1,))
    assert str(run_dir) in refused.stderr
    assert sql_rows(db, "SELECT count(*) AS n FROM jobs")[0]["n"] == 0


# ------------------------------------------------------------------ 6. fixing a mis-registered job

def test_6_register_again_names_each_difference(tmp_path, sample_spec):
    db = tmp_path / "ledger.db"
    first, second = tmp_path / "a", tmp_path / "b"
    jl(db, "register", sample_spec, "--store", first)
    refused = jl(db, "register", sample_spec, "--store", second, "--seed-policy", "task", ok=(1,))
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert f"store: {first} ≠ {second}" in line and "seed policy: runner ≠ task" in line
    assert f"jobledger forget {SAMPLE_JOB}" in line
    assert status_doc(db, SAMPLE_JOB)["store_url"] == str(first)


def test_6_forget_removes_a_job_and_with_recursive_its_resume_children(tmp_path, sample_spec, sample_tree,
                                                                         seir_bundle):
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree)
    jl(db, "validate", SAMPLE_JOB, ok=(3,))
    jl(db, "resume", SAMPLE_JOB, "--runtime", "local", "--bundle-path", seir_bundle)
    child = f"{SAMPLE_JOB}-r1"
    wait_for_exit(db, child)
    counts = "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM outputs) AS outputs"
    before = sql_rows(db, counts)

    refused = jl(db, "forget", SAMPLE_JOB, ok=(1,))
    assert child in refused.stderr and "--recursive" in refused.stderr
    assert sql_rows(db, counts) == before

    out = jl(db, "forget", SAMPLE_JOB, "--recursive").stdout
    assert SAMPLE_JOB in out and child in out
    left = sql_rows(db, "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM outputs) + "
                        "(SELECT count(*) FROM transitions) + (SELECT count(*) FROM validation_runs) + "
                        "(SELECT count(*) FROM output_events) + (SELECT count(*) FROM unexpected_paths) AS n")
    assert left == [{"n": 0}]
    assert jl(db, "status", SAMPLE_JOB, ok=(1,)).stderr.strip() == f"error: unknown job id '{SAMPLE_JOB}'"
    # Registered afresh with the right store, it starts over.
    jl(db, "register", sample_spec, "--store", tmp_path / "elsewhere")
    assert status_doc(db, SAMPLE_JOB)["store_url"] == str(tmp_path / "elsewhere")


def test_6_forget_with_a_registry_removes_only_the_local_copy(tmp_path, sample_spec, sample_tree):
    registry = f"file://{tmp_path / 'registry'}"
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree, registry=registry)
    out = jl(db, "forget", SAMPLE_JOB, registry=registry).stdout
    assert "only" in out and "registry" in out
    assert sql_rows(db, "SELECT count(*) AS n FROM jobs") == [{"n": 0}]
    jl(db, "pull", registry=registry)
    assert status_doc(db, SAMPLE_JOB)["status"] == "scheduled"


# ------------------------------------------------------------------ 7. hints that lead somewhere

def test_7_cancelled_jobs_give_no_hint_that_fails_and_cancel_twice_is_a_no_op(tmp_path, sample_spec,
                                                                               sample_tree):
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree)
    jl(db, "cancel", SAMPLE_JOB)
    again = jl(db, "cancel", SAMPLE_JOB)
    assert "already cancelled" in again.stdout
    assert [m[1] for m in history(db, SAMPLE_JOB)] == ["scheduled", "cancelled"]

    plain = jl(db, "validate", SAMPLE_JOB, ok=None)
    assert "--force" not in plain.stdout + plain.stderr
    forced = jl(db, "validate", "--force", SAMPLE_JOB, ok=None)
    assert forced.exit_code != 1 and "illegal" not in forced.stderr
    assert status_doc(db, SAMPLE_JOB)["status"] == "cancelled"


def test_7_every_hint_in_an_error_runs(tmp_path, sample_spec, sample_tree, seir_bundle):
    """Follow the `jobledger …` hints errors give: the hinted command must succeed."""
    db = tmp_path / "ledger.db"
    jl(db, "register", sample_spec, "--store", sample_tree, "--namespace", "modelops")
    with sqlite3.connect(db) as conn:  # a job its runtime reported failed, before any validation
        conn.execute("UPDATE jobs SET status = 'failed' WHERE job_id = ?", (SAMPLE_JOB,))
    hinted = jl(db, "resume", SAMPLE_JOB, "--dry-run", ok=(1,)).stderr
    command = hinted.split("`")[1].split()
    assert command[0] == "jobledger"
    jl(db, *command[1:], ok=(3,))
    assert status_doc(db, SAMPLE_JOB)["status"] == "partial"

    # A job submitted elsewhere without runtime coordinates: resume says what it needs to run it.
    other = "job-0000beef"
    jl(db, "register", sample_spec, "--store", sample_tree, "--job-id", other)
    jl(db, "validate", other, ok=(3,))
    hint = jl(db, "resume", other, ok=(1,)).stderr
    command = hint.split("`")[1].split()
    assert command[:3] == ["jobledger", "resume", other] and "--runtime" in command
    assert sql_rows(db, "SELECT count(*) AS n FROM jobs") == [{"n": 2}]
    jl(db, *[str(seir_bundle) if c == "DIR" else c for c in command[1:]])
    assert wait_for_exit(db, f"{other}-r1")["ran"] == 3


def test_7_the_hint_for_a_history_that_differs_from_the_registry_gets_out_of_it(tmp_path, sample_spec,
                                                                                 sample_tree):
    """A ledger that moved a job without the registry while another machine moved it in the registry: the
    error's hint once named `jobledger pull`, which keeps the local history, so the error came back."""
    registry = f"file://{tmp_path / 'registry'}"
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    jl(a, "register", sample_spec, "--store", sample_tree, registry=registry)
    jl(a, "validate", SAMPLE_JOB, ok=(3,))                # no --registry: only this ledger knows
    jl(b, "pull", registry=registry)
    jl(b, "cancel", SAMPLE_JOB, registry=registry)        # the registry's history goes another way
    refused = jl(a, "validate", "--force", SAMPLE_JOB, registry=registry, ok=(1,)).stderr
    assert "history differs" in refused
    noted = json.loads(jl(a, "pull", SAMPLE_JOB, "--json", registry=registry).stdout)[0]["note"]
    for hint in (refused, noted):
        commands = [c.split() for c in hint.split("`")[1::2]]
        assert commands == [["jobledger", "forget", SAMPLE_JOB], ["jobledger", "pull", SAMPLE_JOB]], hint
    for command in commands:
        jl(a, *command[1:], registry=registry)
    assert status_doc(a, SAMPLE_JOB)["status"] == "cancelled"
    jl(a, "validate", "--force", SAMPLE_JOB, registry=registry, ok=(3,))  # a cancelled job is observed
    assert status_doc(a, SAMPLE_JOB)["status"] == "cancelled"


# ------------------------------------------------------------------ 8. jobs stuck in submitting

NS = "modelops-dask-dev"


def _killed_mid_submit(db: Path, spec: Path, standin, *, created: bool, env: dict) -> str:
    """Run `jobledger submit --runtime k8s` as a real process and SIGKILL it while its create-Job
    request hangs (after the API server stored the Job when ``created``)."""
    release = standin.hold_next("POST", store_first=created)
    proc = subprocess.Popen([sys.executable, "-m", "jobledger", "--db", str(db), "submit", str(spec),
                             "--runtime", "k8s", "--store", "az://results/runs"], env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert standin.wait_held(timeout=60), proc.stderr.read() if proc.poll() is not None else "no request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        release()
    return json.loads(spec.read_text())["job_id"]


def test_8_sync_recovers_jobs_stuck_in_submitting(tmp_path, golden, standin, azure_conn, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    env = {**os.environ}
    db = tmp_path / "ledger.db"
    specs = []
    for job_id in ("job-0000c0de", "job-0000dead"):
        specs.append(tmp_path / f"{job_id}.json")
        specs[-1].write_text(json.dumps({**golden["simjob_spec_example"], "job_id": job_id}))

    # Killed after the API server created the Job: the runtime has it, so it is scheduled.
    kept = _killed_mid_submit(db, specs[0], standin, created=True, env=env)
    assert status_doc(db, kept)["status"] == "submitting"
    out = jl(db, "sync").stdout
    assert f"{kept}: submitting → scheduled" in out
    assert status_doc(db, kept)["k8s_name"] == kept

    # Killed before the Job existed: after the timeout the job is failed, and may be submitted again.
    lost = _killed_mid_submit(db, specs[1], standin, created=False, env=env)
    assert standin.job(NS, lost) is None
    out = jl(db, "sync").stdout
    assert status_doc(db, lost)["status"] == "submitting"  # young: a submit may still be under way
    assert f"{lost}: submitting" in out
    out = jl(db, "sync", "--submit-timeout", "0").stdout
    assert f"{lost}: submitting → failed" in out and "submit interrupted" in out
    assert status_doc(db, lost)["error_message"].startswith("submit interrupted")
    again = jl(db, "submit", specs[1], "--runtime", "k8s", "--store", "az://results/runs").stdout
    assert again.strip().endswith("scheduled (k8s, 4 expected outputs)")
    assert standin.job(NS, lost) is not None


def _as_if_killed_mid_submit(db: Path, job_id: str, *leftover_files: str) -> Path:
    """The ledger and run directory as a local submit killed part-way leaves them: the job still
    ``submitting``, no runtime recorded, and of the run directory only ``leftover_files``."""
    run_dir = run_dir_of(db, job_id)
    for path in run_dir.iterdir():
        if path.name not in leftover_files:
            path.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET status = 'submitting', runtime_ref = NULL WHERE job_id = ?", (job_id,))
    return run_dir


def test_8_a_local_submit_killed_before_its_worker_started_may_be_submitted_again(tmp_path):
    """Killed after it wrote the plan, before it started the worker: sync calls it interrupted, and the
    submit again runs it (the run directory the first one left is replaced, not a dead end)."""
    db, store = tmp_path / "ledger.db", tmp_path / "store"
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    job_id = submit_local(db, spec, store, EXAMPLE_MODEL)
    wait_for_exit(db, job_id)
    # The worker wrote its exit record, but may still be shutting down: until it is gone, sync would
    # rightly find it running (by its command line) and call the job scheduled.
    from jobledger.runtimes.local import worker_running
    deadline = time.monotonic() + 30
    while worker_running(run_dir_of(db, job_id)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(store)
    run_dir = _as_if_killed_mid_submit(db, job_id, "plan.json")
    out = jl(db, "sync", "--submit-timeout", "0").stdout
    assert f"{job_id}: submitting → failed" in out and "may be submitted again" in out
    again = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store,
               "--bundle-path", EXAMPLE_MODEL)
    assert "→ scheduled" in again.stdout
    assert run_dir_of(db, job_id) == run_dir and wait_for_exit(db, job_id)["ran"] == 1
    assert jl(db, "sync").stdout.strip() == f"{job_id}: scheduled → validating → succeeded (1 verified)"


def test_8_a_local_submit_killed_after_its_worker_started_is_recovered_with_that_worker(tmp_path,
                                                                                       gated_bundle):
    """Killed between starting the worker and recording its pid: sync finds the worker (running: by its
    command line; finished: by its exit record), so the job is scheduled, not failed and run twice."""
    db, gate = tmp_path / "ledger.db", tmp_path / "gate"
    spec = study(tmp_path / "study.json", "gated.model", "wait", [{"gate": str(gate)}])
    job_id = submit_local(db, spec, tmp_path / "store", gated_bundle)
    worker = json.loads(run_dir_ref(db, job_id))["pid"]
    _as_if_killed_mid_submit(db, job_id, "plan.json", "worker.log")
    out = jl(db, "sync", "--submit-timeout", "0").stdout
    assert f"{job_id}: submitting → scheduled" in out
    assert json.loads(run_dir_ref(db, job_id))["pid"] == worker
    assert jl(db, "sync").stdout.strip() == f"{job_id}: scheduled → running"
    gate.touch()
    assert wait_for_exit(db, job_id)["ran"] == 1
    _as_if_killed_mid_submit(db, job_id, "plan.json", "worker.log", "exit.json")
    assert f"{job_id}: submitting → scheduled" in jl(db, "sync", "--submit-timeout", "0").stdout
    assert jl(db, "sync").stdout.strip() == f"{job_id}: scheduled → validating → succeeded (1 verified)"


# ------------------------------------------------------------------ 9. tests and users need no PATH

def test_9_python_dash_m_jobledger_works_without_the_console_script_on_path(tmp_path, sample_spec):
    env = {**os.environ, "PATH": "/usr/bin:/bin", "JOBLEDGER_DB": str(tmp_path / "ledger.db")}
    done = subprocess.run([sys.executable, "-m", "jobledger", "register", str(sample_spec), "--store",
                           str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "12 expected outputs" in done.stdout
    version = subprocess.run([sys.executable, "-m", "jobledger", "--version"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "version" in version.stdout, version.stderr


def test_9_no_test_calls_the_console_script_by_name():
    """Subprocess CLI calls use `sys.executable -m jobledger`, so the suite passes without PATH."""
    by_name = re.compile(r"""(?:Popen|run|call|check_output)\(\s*\[\s*["']jobledger["']"""
                         r"""|which\(["']jobledger""")
    offenders = [f"{path.name}: {m.group(0)}" for path in sorted((ROOT / "tests").glob("*.py"))
                 for m in by_name.finditer(path.read_text())]
    assert offenders == []
