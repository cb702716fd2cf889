"""One registry shared with ModelOps: blobs ModelOps's own code wrote, moves it makes on jobledger's jobs,
the progress fields jobledger writes for it, and jobs registered after ModelOps created them."""
from __future__ import annotations

import json
import re

import pytest
from helpers import cli as run_cli
from modelops_writer import JOBSTATE_TYPES, from_dict, update_status

from jobledger import states
from jobledger.ledger import Ledger
from jobledger.registry import open_mirror, open_versioned_store
from jobledger.registry.state import MODELOPS_KEYS, PATH_LIST_CAP, build_state, make_progress, state_key

SAMPLE_JOB = "job-5a11e0c3"
NS = "modelops-dask-dev"
LABELS = {"app": "modelops", "component": "job-runner"}


@pytest.fixture
def registry(tmp_path):
    return f"file://{tmp_path / 'registry'}"


@pytest.fixture
def upstream(spec_dir) -> dict[str, bytes]:
    """The seven state.json blobs ModelOps's JobRegistry wrote, by job id."""
    return {p.stem: p.read_bytes() for p in sorted((spec_dir / "upstream" / "states").glob("*.json"))}


def cli(db, registry, *args, ok=(0,)):
    return run_cli("--db", db, *(["--registry", registry] if registry else []), *args, ok=ok)


def as_json(result):
    return json.loads(result.stdout)


def blob(registry, job_id) -> dict:
    return json.loads(open_versioned_store(registry).get(state_key(job_id))[0])


def register_sample(db, registry, spec_dir, job_id=SAMPLE_JOB, *extra):
    cli(db, registry, "register", spec_dir / "sample" / "job-5a11e0c3.json", "--store",
        spec_dir / "sample" / "provenance", *(["--job-id", job_id] if job_id != SAMPLE_JOB else []), *extra)


def history(db, job_id):
    return [(h["from_status"], h["to_status"], h["reason"]) for h in as_json(cli(db, None, "history", job_id,
                                                                                   "--json"))]


# ------------------------------------------------------------------ jobs ModelOps wrote

def test_each_modelops_blob_pulls_with_its_status_coordinates_and_reported_outputs(tmp_path, registry, upstream,
                                                                                  standin, monkeypatch):
    store = open_versioned_store(registry)
    for job_id, data in upstream.items():
        assert store.create_if_absent(state_key(job_id), data)
    db = tmp_path / "a.db"
    pulled = {r["job_id"]: r for r in as_json(cli(db, registry, "pull", "--json"))}
    assert len(pulled) == 7
    for job_id, data in upstream.items():
        written = json.loads(data)
        status = as_json(cli(db, None, "status", job_id, "--json"))
        assert (pulled[job_id]["action"], status["status"]) == ("imported", written["status"])
        assert (status["runtime"], status["k8s_name"], status["k8s_namespace"]) == ("k8s", job_id, NS)
        assert status["created_at"] == written["created_at"]
    uid = as_json(cli(db, None, "sql", "SELECT k8s_uid FROM jobs WHERE job_id = 'job-a0000002'", "--json"))
    assert uid == [{"k8s_uid": "uid-2"}]

    # the partial job: ModelOps's verified/missing result paths are what `missing` and `status` show
    partial = as_json(cli(db, None, "status", "job-a0000003", "--json"))
    assert (partial["expected"], partial["verified"], partial["missing"]) == (3, 2, 1)
    text = cli(db, None, "status", "job-a0000003").stdout  # what ModelOps reported, not 'not validated yet'
    assert re.search(r"^verified +2 \(66\.7%\)$", text, re.M) and re.search(r"^missing +1$", text, re.M), text
    missing = cli(db, None, "missing", "job-a0000003", "--format", "paths").stdout.split()
    assert missing == ["token/v1/sims/x/aa/bb/params_1/seed_3"]
    assert "3 reported result paths" in pulled["job-a0000003"]["note"]
    assert "no expected outputs" in pulled["job-a0000001"]["note"]
    metadata = json.loads(as_json(cli(db, None, "sql", "SELECT metadata FROM jobs WHERE job_id = 'job-a0000003'",
                                      "--json"))[0]["metadata"])
    assert metadata["blob_key"] == "jobs/simulation/job-a0000003.json"

    # sync asks Kubernetes about the scheduled and running ones and moves them
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    standin.add_job(NS, {"metadata": {"name": "job-a0000001", "labels": {**LABELS, "job-id": "job-a0000001"}}})
    standin.set_status(NS, "job-a0000001", {"active": 1})
    standin.add_job(NS, {"metadata": {"name": "job-a0000002", "labels": {**LABELS, "job-id": "job-a0000002"}}})
    standin.set_status(NS, "job-a0000002", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    synced = {r["job_id"]: r for r in as_json(cli(db, registry, "sync", "--json", ok=(1,)))}
    moved = {job_id: r["path"] for job_id, r in synced.items() if r["changed"]}
    assert moved == {"job-a0000001": ["scheduled", "running"], "job-a0000002": ["running", "validating"]}
    # job-a0000002 finished, but nothing says what it should have written: no verdict, and sync says why
    assert "no expected outputs known" in synced["job-a0000002"]["error"]
    assert [r["job_id"] for r in synced.values() if r["error"]] == ["job-a0000002"]
    # the blobs stay ModelOps's: its reader parses them, its metadata and coordinates are intact
    for job_id, status in (("job-a0000001", "running"), ("job-a0000002", "validating")):
        doc = from_dict(blob(registry, job_id))
        assert (doc["status"], doc["k8s_name"], doc["metadata"]["image"]) == \
            (status, job_id, "ghcr.io/institutefordiseasemodeling/modelops-dask-runner:latest")
        assert doc["created_at"] == json.loads(upstream[job_id])["created_at"]
    assert blob(registry, "job-a0000002")["k8s_uid"] == "uid-2"
    # and another machine sees the moves
    assert as_json(cli(tmp_path / "b.db", registry, "pull", "job-a0000002", "--json"))[0]["status"] == "validating"


# ------------------------------------------------------------------ ModelOps moving jobledger's jobs

def test_a_move_modelops_made_is_imported_and_pull_validate_resume_keep_working(tmp_path, registry, spec_dir,
                                                                              standin, azure_conn, monkeypatch):
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir)
    store = open_versioned_store(registry)
    update_status(store, SAMPLE_JOB, "running", k8s_uid="uid-77", metadata={"runner": "dask"})

    pulled = as_json(cli(db, registry, "pull", SAMPLE_JOB, "--json"))
    assert (pulled[0]["action"], pulled[0]["status"]) == ("updated", "running")
    assert history(db, SAMPLE_JOB)[-1] == ("scheduled", "running", "moved by ModelOps")
    assert as_json(cli(db, None, "status", SAMPLE_JOB, "--json"))["status"] == "running"
    cli(db, registry, "validate", SAMPLE_JOB, ok=(3,))  # a progress report while running

    update_status(store, SAMPLE_JOB, "validating", validation_started_at="2026-11-29T18:00:00+00:00")
    cli(db, registry, "pull")
    result = as_json(cli(db, registry, "validate", SAMPLE_JOB, "--json", ok=(3,)))
    assert (result["previous_status"], result["status"], result["verified"]) == ("validating", "partial", 9)
    assert [(a, b) for a, b, _ in history(db, SAMPLE_JOB)] == [
        (None, "scheduled"), ("scheduled", "running"), ("running", "validating"), ("validating", "partial")]
    assert [r for _, _, r in history(db, SAMPLE_JOB)][1:3] == ["moved by ModelOps"] * 2

    # jobledger's write kept ModelOps's fields and appended to the history, with who moved what
    doc = blob(registry, SAMPLE_JOB)
    assert (doc["status"], doc["k8s_uid"], doc["metadata"]["runner"]) == ("partial", "uid-77", "dask")
    moves = doc["metadata"]["jobledger"]["transitions"]
    assert [(e[1], e[3], e[4]) for e in moves[1:3]] == [("running", "moved by ModelOps", "ModelOps"),
                                                        ("validating", "moved by ModelOps", "ModelOps")]
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    assert (doc["tasks_total"], doc["tasks_verified"]) == (12, 9)
    assert sorted(doc["verified_outputs"]) == sorted(truth["verified"])
    assert len(doc["missing_outputs"]) == 3 and not set(doc["missing_outputs"]) & set(truth["verified"])
    assert doc["metadata"]["jobledger"]["missing_outputs"] == {"total": 3, "capped": False}

    # resume runs the missing outputs as Kubernetes jobs (spec blobs in Azurite, Jobs in the stand-in)
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("MODELOPS_BUNDLE_REGISTRY", raising=False)
    cli(db, registry, "resume", SAMPLE_JOB, "--runtime", "k8s", "--namespace", NS)
    listed = as_json(cli(db, None, "list", "--json"))
    resumed = [r["job_id"] for r in listed if r["parent_job_id"] == SAMPLE_JOB]
    assert resumed and all(standin.job(NS, job_id) for job_id in resumed), resumed
    assert all(blob(registry, job_id)["status"] == "scheduled" for job_id in resumed)


def test_validate_and_resume_start_from_the_move_modelops_made_with_no_pull_first(tmp_path, registry, spec_dir):
    """A command that decides from a job's status reads the registry's first: validate after ModelOps moved
    the job to validating decides it (it reported a stale 'scheduled (no transition)' and left the job
    undecided), and resume after ModelOps failed the job says what the failed job needs."""
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir, SAMPLE_JOB, "--namespace", NS)  # its runtime reports: it waits
    store = open_versioned_store(registry)
    update_status(store, SAMPLE_JOB, "running")
    moved = update_status(store, SAMPLE_JOB, "validating")
    result = as_json(cli(db, registry, "validate", SAMPLE_JOB, "--json", ok=(3,)))
    assert (result["previous_status"], result["status"], result["verified"]) == ("validating", "partial", 9)
    assert history(db, SAMPLE_JOB)[1] == ("scheduled", "validating", "moved by ModelOps")
    at = as_json(cli(db, None, "history", SAMPLE_JOB, "--json"))[1]["at"]
    assert at == moved["updated_at"]  # the move is dated when ModelOps made it
    assert blob(registry, SAMPLE_JOB)["status"] == "partial"

    other = "job-0000f00d"
    register_sample(db, registry, spec_dir, other, "--namespace", NS)
    update_status(store, other, "running")
    update_status(store, other, "failed", error_message="BackoffLimitExceeded", error_code="K8S_FAILED")
    refused = cli(db, registry, "resume", other, ok=(1,))
    assert f"{other} is failed but its outputs were never observed" in refused.stderr
    assert f"`jobledger validate --force {other}`" in refused.stderr
    assert as_json(cli(db, None, "status", other, "--json"))["status"] == "failed"


def test_a_modelops_writer_still_works_after_the_moves_its_table_forbids(tmp_path, registry, spec_dir):
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir)
    store = open_versioned_store(registry)
    with Ledger(db, mirror=open_mirror(registry)) as ledger:
        ledger.transition(SAMPLE_JOB, states.VALIDATING, "runtime finished before the first sync")  # scheduled→validating
    state = update_status(store, SAMPLE_JOB, "validating", validation_attempts=1)  # ModelOps's runner carries on
    assert state["metadata"]["jobledger"]["transitions"][-1][:2] == ["scheduled", "validating"]
    cli(db, registry, "validate", SAMPLE_JOB, ok=(3,))
    cli(db, registry, "validate", "--force", SAMPLE_JOB, ok=(3,))                  # partial→validating→partial
    assert [e[:2] for e in blob(registry, SAMPLE_JOB)["metadata"]["jobledger"]["transitions"]][-2:] == \
        [["partial", "validating"], ["validating", "partial"]]
    # ModelOps may rewrite a terminal job with the same status (what finalize does), never move it
    update_status(store, SAMPLE_JOB, "partial", tasks_verified=9, last_validation_error=None)
    with pytest.raises(ValueError, match="terminal"):
        update_status(store, SAMPLE_JOB, "running")
    assert as_json(cli(db, registry, "pull", SAMPLE_JOB, "--json"))[0]["status"] == "partial"
    cli(db, registry, "validate", "--force", SAMPLE_JOB, ok=(3,))
    assert history(db, SAMPLE_JOB)[-1][:2] == ("validating", "partial")


def test_a_move_modelops_made_backwards_is_still_a_fact(tmp_path, registry, spec_dir):
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir)
    with Ledger(db, mirror=open_mirror(registry)) as ledger:
        ledger.transition(SAMPLE_JOB, states.RUNNING, "runtime reports running")
    update_status(open_versioned_store(registry), SAMPLE_JOB, "scheduled")  # a stale ModelOps sync
    assert as_json(cli(db, registry, "pull", "--json"))[0]["status"] == "scheduled"
    assert history(db, SAMPLE_JOB)[-1] == ("running", "scheduled", "moved by ModelOps")
    with Ledger(db, mirror=open_mirror(registry)) as ledger:  # jobledger carries on from there
        assert ledger.transition(SAMPLE_JOB, states.RUNNING, "runtime reports running")["status"] == "running"


def test_an_unparseable_blob_is_the_only_error(tmp_path, registry, spec_dir):
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir)
    store = open_versioned_store(registry)
    _, version = store.get(state_key(SAMPLE_JOB))
    assert store.put(state_key(SAMPLE_JOB), b'{"job_id": "job-5a11e0c3", "status": ', version)
    result = cli(db, registry, "pull", SAMPLE_JOB, ok=(1,))
    assert result.stderr.count("\n") == 1 and "not valid JSON" in result.stderr


# ------------------------------------------------------------------ registering a job ModelOps created

def test_registering_the_spec_of_a_job_modelops_created_adopts_it(tmp_path, registry, spec_dir, upstream):
    store = open_versioned_store(registry)
    assert store.create_if_absent(state_key("job-a0000002"), upstream["job-a0000002"])  # running, uid-2
    written = json.loads(upstream["job-a0000002"])
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir, "job-a0000002")
    status = as_json(cli(db, None, "status", "job-a0000002", "--json"))
    assert (status["status"], status["created_at"], status["expected"]) == ("running", written["created_at"], 12)
    doc = blob(registry, "job-a0000002")
    assert (doc["status"], doc["created_at"], doc["k8s_uid"]) == ("running", written["created_at"], "uid-2")
    assert {k: doc["metadata"][k] for k in ("type", "blob_key", "image")} == written["metadata"]
    assert doc["metadata"]["model"] == "models.seir.StochasticSEIR"  # the spec's metadata joins it
    assert doc["metadata"]["jobledger"]["manifest"] == "jobs/job-a0000002/manifest.jsonl.gz"
    assert store.get("jobs/job-a0000002/manifest.jsonl.gz") is not None
    assert doc["tasks_total"] == 12
    assert history(db, "job-a0000002") == [(None, "running",
                                            "imported from registry (written by ModelOps, no manifest)")]
    # another machine now pulls the full job
    other = as_json(cli(tmp_path / "b.db", registry, "pull", "--json"))
    assert [(r["job_id"], r["status"], r["expected"]) for r in other] == [("job-a0000002", "running", 12)]
    cli(db, registry, "register", spec_dir / "sample" / "job-5a11e0c3.json", "--store",
        spec_dir / "sample" / "provenance", "--job-id", "job-a0000002")  # identical again: a no-op


def test_a_pulled_modelops_job_gets_its_spec_and_jobledger_validation_takes_over(tmp_path, registry, spec_dir,
                                                                               upstream, monkeypatch):
    store = open_versioned_store(registry)
    assert store.create_if_absent(state_key("job-a0000003"), upstream["job-a0000003"])  # partial, 2 of 3
    db = tmp_path / "a.db"
    cli(db, registry, "pull")
    (tmp_path / "empty-store").mkdir()
    monkeypatch.setenv("JOBLEDGER_STORE", str(tmp_path / "empty-store"))  # where ModelOps's paths are looked for
    reported = as_json(cli(db, registry, "validate", "job-a0000003", "--force", "--json", ok=(4,)))
    assert (reported["status"], reported["expected"], reported["verified"]) == ("failed", 3, 0)
    assert "result paths ModelOps reported" in reported["note"]
    register_sample(db, registry, spec_dir, "job-a0000003")
    status = as_json(cli(db, None, "status", "job-a0000003", "--json"))
    assert (status["status"], status["expected"], status["verified"]) == ("failed", 12, 0)
    assert "token/v1/sims/x/aa/bb/params_1/seed_3" not in cli(db, None, "missing", "job-a0000003").stdout
    result = as_json(cli(db, registry, "validate", "--force", "job-a0000003", "--json", ok=(3,)))
    assert (result["status"], result["verified"], result["note"]) == ("partial", 9, None)
    doc = blob(registry, "job-a0000003")
    assert (doc["tasks_verified"], len(doc["verified_outputs"]), len(doc["missing_outputs"])) == (9, 9, 3)
    assert "token/v1/sims/x/aa/bb/params_1/seed_1" not in doc["verified_outputs"]


# ------------------------------------------------------------------ jobs ModelOps created, without a spec

def make_results(store, paths):
    """Result directories as a worker leaves them (a listing classifies them by their file names)."""
    for path in paths:
        (store / path).mkdir(parents=True)
        (store / path / "metadata.json").write_text("{}")
        (store / path / "result.json").write_text('{"outputs": {}}')


def test_a_modelops_job_is_validated_on_the_result_paths_it_reported(tmp_path, registry, upstream, standin,
                                                                    monkeypatch):
    versioned = open_versioned_store(registry)
    for job_id in ("job-a0000002", "job-a0000003"):
        assert versioned.create_if_absent(state_key(job_id), upstream[job_id])
    seeds = {n: f"token/v1/sims/x/aa/bb/params_1/seed_{n}" for n in (1, 2, 3)}
    store = tmp_path / "provenance"
    monkeypatch.setenv("JOBLEDGER_STORE", str(store))   # ModelOps named no results_path: the default store
    make_results(store, [seeds[1], seeds[3]])            # seed_2 is gone since ModelOps's verdict; seed_3 came
    db = tmp_path / "a.db"
    cli(db, registry, "pull")

    # partial as ModelOps had it (seeds 1 and 2); re-validated, jobledger decides from the store
    result = cli(db, registry, "validate", "--force", "job-a0000003", ok=(3,))
    assert result.stdout.startswith("job-a0000003: partial → validating → partial, outcome partial\n"
                                    "2/3 verified, 1 missing")
    assert "note: job-a0000003 has no spec (ModelOps created it): checked the result paths ModelOps " \
           f"reported, in {store}" in result.stdout
    assert cli(db, None, "missing", "job-a0000003", "--format", "paths").stdout.split() == [seeds[2]]
    assert [(a, b) for a, b, _ in history(db, "job-a0000003")][-2:] == [("partial", "validating"),
                                                                        ("validating", "partial")]
    doc = from_dict(blob(registry, "job-a0000003"))      # written as ModelOps writes a verdict
    assert (doc["status"], doc["tasks_verified"]) == ("partial", 2)
    assert (doc["verified_outputs"], doc["missing_outputs"]) == ([seeds[1], seeds[3]], [seeds[2]])
    assert doc["metadata"]["blob_key"] == "jobs/simulation/job-a0000003.json"
    assert versioned.get("jobs/job-a0000003/observed.json.gz") is None  # no manifest fixes the rows' order
    other = as_json(cli(tmp_path / "b.db", registry, "pull", "job-a0000003", "--json"))[0]
    assert (other["status"], other["expected"]) == ("partial", 3)
    assert cli(tmp_path / "b.db", None, "missing", "job-a0000003", "--format", "paths").stdout.split() == \
        [seeds[2]]
    make_results(store, [seeds[2]])
    assert as_json(cli(db, registry, "validate", "--force", "job-a0000003", "--json"))["status"] == "succeeded"
    # resume would need the tasks, which only the spec has
    refused = cli(db, registry, "resume", "job-a0000003", ok=(1,))
    assert refused.stderr == ("error: job-a0000003: no spec known, only the result paths ModelOps reported "
                              "(ModelOps created it without a spec): register its spec with `jobledger register "
                              "SPEC --job-id job-a0000003` to resume it\n")

    # a running job whose runner reported paths; Kubernetes says it completed: sync decides on those paths
    update_status(versioned, "job-a0000002", "running", verified_outputs=[seeds[1]], missing_outputs=[seeds[3]],
                  tasks_verified=1)
    cli(db, registry, "pull", "job-a0000002")
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    standin.add_job(NS, {"metadata": {"name": "job-a0000002", "labels": {**LABELS, "job-id": "job-a0000002"}}})
    standin.set_status(NS, "job-a0000002", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert cli(db, registry, "sync").stdout == "job-a0000002: running → validating → succeeded (2 verified)\n"
    assert blob(registry, "job-a0000002")["verified_outputs"] == [seeds[1], seeds[3]]


def test_a_modelops_job_with_no_outputs_known_gets_no_verdict_and_says_how_to_give_it_one(
        tmp_path, registry, upstream, spec_dir, standin, monkeypatch):
    versioned = open_versioned_store(registry)
    assert versioned.create_if_absent(state_key("job-a0000002"), upstream["job-a0000002"])  # running, no paths
    db = tmp_path / "a.db"
    pulled = as_json(cli(db, registry, "pull", "--json"))[0]
    needed = ("register its spec with `jobledger register SPEC --job-id job-a0000002` to validate it")
    assert needed in pulled["note"]
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    standin.add_job(NS, {"metadata": {"name": "job-a0000002", "labels": {**LABELS, "job-id": "job-a0000002"}}})
    standin.set_status(NS, "job-a0000002", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    message = (f"job-a0000002: no expected outputs known (ModelOps created it without a spec): {needed}")

    synced = cli(db, registry, "sync", ok=(1,))
    assert synced.stdout == f"job-a0000002: running → validating [error: {message}]\n"
    assert cli(db, registry, "sync", ok=(1,)).stdout == f"job-a0000002: validating [error: {message}]\n"
    before = [cli(db, None, *args).stdout for args in (("status", "job-a0000002", "--json"),
                                                      ("history", "job-a0000002"),
                                                      ("sql", "SELECT * FROM validation_runs"))]
    assert json.loads(before[0])["status"] == "validating"
    for args in (("validate", "job-a0000002"), ("validate", "--force", "job-a0000002"),
                 ("validate", "job-a0000002", "--json")):
        refused = cli(db, registry, *args, ok=(1,))
        assert refused.stderr == f"error: {message}\n" and refused.stdout == ""
    resumed = cli(db, registry, "resume", "job-a0000002", ok=(1,))
    assert resumed.stderr == f"error: {message.replace('to validate it', 'to resume it')}\n"
    assert [cli(db, None, *args).stdout for args in (("status", "job-a0000002", "--json"),
                                                     ("history", "job-a0000002"),
                                                     ("sql", "SELECT * FROM validation_runs"))] == before
    assert blob(registry, "job-a0000002")["status"] == "validating"
    assert f"note: {message}" in cli(db, None, "validate", "--explain", "job-a0000002").stdout

    # doing what the message says: the spec gives it outputs, and the next sync decides
    cli(db, registry, "register", spec_dir / "sample" / "job-5a11e0c3.json", "--store",
        spec_dir / "sample" / "provenance", "--job-id", "job-a0000002")
    assert cli(db, registry, "sync").stdout == \
        "job-a0000002: validating → partial (9 verified, 1 missing, 1 errored, 1 incomplete)\n"


# ------------------------------------------------------------------ what jobledger writes, as ModelOps reads it

def test_every_field_jobledger_writes_has_the_type_modelops_jobstate_expects(tmp_path, registry, spec_dir):
    db = tmp_path / "a.db"
    register_sample(db, registry, spec_dir, SAMPLE_JOB, "--namespace", NS)  # its runtime reports: not decided
    seen = [blob(registry, SAMPLE_JOB)]                              # scheduled, never validated
    cli(db, registry, "validate", SAMPLE_JOB, ok=(3,))               # progress report
    seen.append(blob(registry, SAMPLE_JOB))
    with Ledger(db, mirror=open_mirror(registry)) as ledger:
        ledger.transition(SAMPLE_JOB, states.VALIDATING, "complete")
        seen.append(blob(registry, SAMPLE_JOB))
    cli(db, registry, "validate", SAMPLE_JOB, ok=(3,))               # partial, with path lists
    seen.append(blob(registry, SAMPLE_JOB))
    for doc in seen:
        assert tuple(doc) == MODELOPS_KEYS
        state = from_dict(doc)
        assert set(state) == set(JOBSTATE_TYPES)
    final = from_dict(seen[-1])
    assert (final["status"], final["tasks_total"], final["tasks_verified"], final["validation_attempts"]) == \
        ("partial", 12, 9, 2)
    assert final["validation_started_at"] <= final["validation_completed_at"]
    assert all(p.startswith("token/v1/") for p in final["missing_outputs"] + final["verified_outputs"])


@pytest.mark.parametrize("verified", [0, 4_000, 10_000, 500_000, 995_000, 1_000_000])
def test_a_million_output_job_state_json_stays_under_1_mb_whatever_its_outcome(verified):
    n = 1_000_000

    def path(i):  # the token layout's longest realistic result path
        return f"token/v1/sims/5e5e5e5e5e5e/{i % 256:02x}/{i // 256 % 256:02x}/params_{i:08x}/seed_{4_000_000_000 + i}"

    counts = {"expected": n, "verified": verified, "missing": n - verified, "errored": 0, "incomplete": 0}
    progress = make_progress(counts, (path(i) for i in range(verified, n)), (path(i) for i in range(verified)))
    job = {"job_id": "job-00c0ffee", "status": states.verdict(n, verified), "created_at": "2026-11-29T18:00:00Z",
           "updated_at": "2026-11-29T19:00:00Z", "spec_format": "study", "store_url": "az://results/runs",
           "tasks_total": n, "validation_attempts": 1, "validation_started_at": "2026-11-29T18:59:00Z",
           "validation_completed_at": "2026-11-29T19:00:00Z", "metadata": "{}"}
    history = [[None, "scheduled", "2026-11-29T18:00:00Z", "registered", "me"],
               ["scheduled", "validating", "2026-11-29T18:59:00Z", "complete", "me"],
               ["validating", job["status"], "2026-11-29T19:00:00Z", "validated", "me"]]
    from jobledger.registry.state import encode_state
    data = encode_state(build_state(job, progress, history))
    assert len(data) < 1_000_000, len(data)
    doc = from_dict(json.loads(data))
    unverified = n - verified
    listed = min(unverified, PATH_LIST_CAP)
    assert doc["missing_outputs"] == [path(i) for i in range(verified, verified + listed)]
    both_fit = listed + verified <= PATH_LIST_CAP
    assert doc["verified_outputs"] == ([path(i) for i in range(verified)] if both_fit else [])
    assert (doc["tasks_total"], doc["tasks_verified"]) == (n, verified)
    ours = json.loads(data)["metadata"]["jobledger"]
    assert ours["missing_outputs"] == {"total": unverified, "capped": unverified > PATH_LIST_CAP}
    assert ours["verified_outputs"] == {"total": verified, "capped": verified > 0 and not both_fit}
