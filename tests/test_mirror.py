"""The ledger ↔ registry mirror: round trips, compare-and-swap between machines, faults, ModelOps interop."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import cli as run_cli

from jobledger import states
from jobledger.ledger import Ledger
from jobledger.registry import RegistryError, open_mirror, open_versioned_store
from jobledger.registry.state import MODELOPS_KEYS, state_key

SAMPLE_JOB = "job-5a11e0c3"
QUERIES = (
    "SELECT job_id, job_type, status, bundle_ref, runtime, k8s_name, k8s_namespace, k8s_uid, runtime_ref, "
    "parent_job_id, store_url, layout, seed_policy, spec_format, spec_sha256, tasks_total, expected_total, created_at, "
    "updated_at, validation_attempts, validation_started_at, validation_completed_at, last_validation_error, "
    "error_message, error_code, metadata FROM jobs ORDER BY job_id",
    "SELECT * FROM job_summary ORDER BY job_id",
    "SELECT * FROM expected_outputs ORDER BY job_id, output_id",
    "SELECT job_id, from_status, to_status, at, reason FROM transitions ORDER BY job_id, transition_id",
    "SELECT job_id, started_at, finished_at, strategy, requests, expected, verified, missing, errored, incomplete, "
    "unexpected, outcome FROM validation_runs ORDER BY job_id, started_at, finished_at",
    "SELECT o.job_id, o.path, e.from_state, e.to_state, e.detail, v.started_at FROM output_events e "
    "JOIN outputs o USING (output_id) JOIN validation_runs v USING (run_id) "
    "ORDER BY o.job_id, v.started_at, v.finished_at, o.path, e.to_state",
    "SELECT job_id, path FROM unexpected_paths ORDER BY job_id, path",
)


@pytest.fixture(params=["local", "azure"])
def registry_url(request, tmp_path):
    if request.param == "local":
        return f"file://{tmp_path / 'registry'}"
    request.getfixturevalue("azure_conn")
    return f"az://job-registry/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def local_registry(tmp_path):
    return f"file://{tmp_path / 'registry'}"


@pytest.fixture
def sample(spec_dir):
    return spec_dir / "sample" / "job-5a11e0c3.json", spec_dir / "sample" / "provenance"


def cli(db, registry, *args, ok=(0,)):
    """The CLI on ledger ``db``, mirrored to ``registry`` when one is given."""
    return run_cli("--db", db, *(["--registry", registry] if registry else []), *args, ok=ok)


def mirrored(db, registry) -> Ledger:
    return Ledger(db, mirror=open_mirror(registry))


def answers(db, job_ids):
    """What an analyst sees: status --json, missing, and sql over every table and view."""
    out = {}
    for job_id in job_ids:
        out[f"status {job_id}"] = json.loads(cli(db, None, "status", job_id, "--json").stdout)
        out[f"missing {job_id}"] = cli(db, None, "missing", job_id, "--format", "csv").stdout
    for query in QUERIES:
        out[query] = json.loads(cli(db, None, "sql", query, "--json").stdout)
    return out


def register(db, registry, sample, job_id=None, *extra):
    spec, store = sample
    args = ["register", str(spec), "--store", str(store), *extra] + (["--job-id", job_id] if job_id else [])
    cli(db, registry, *args)
    return job_id or SAMPLE_JOB


def run_to_verdict(db, registry, job_id):
    """What sync + validate do on machine A: scheduled → running → validating → partial."""
    with mirrored(db, registry) as ledger:
        ledger.transition(job_id, states.RUNNING, "runtime reports running")
        ledger.transition(job_id, states.VALIDATING, "runtime reports complete")
        ledger.notify_changed(job_id)
    cli(db, registry, "validate", job_id, ok=(3,))


# ------------------------------------------------------------------ round trip

def test_round_trip_gives_identical_answers(tmp_path, registry_url, sample):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    register(a, registry_url, sample, None, "--namespace", "modelops")  # a runtime decides, validate observes
    cli(a, registry_url, "validate", SAMPLE_JOB, ok=(3,))  # records observations while scheduled
    run_to_verdict(a, registry_url, SAMPLE_JOB)
    pulled = json.loads(cli(b, registry_url, "pull", "--json").stdout)
    assert [(r["job_id"], r["action"], r["status"], r["expected"]) for r in pulled] == \
        [(SAMPLE_JOB, "imported", "partial", 12)]
    seen_a, seen_b = answers(a, [SAMPLE_JOB]), answers(b, [SAMPLE_JOB])
    assert seen_b == seen_a
    assert seen_a[f"status {SAMPLE_JOB}"]["verified"] == 9
    assert [r["to_status"] for r in seen_a[QUERIES[3]]] == ["scheduled", "running", "validating", "partial"]
    # pull is idempotent
    again = json.loads(cli(b, registry_url, "pull", SAMPLE_JOB, "--json").stdout)
    assert again[0]["action"] == "unchanged"
    assert answers(b, [SAMPLE_JOB]) == seen_a


def test_push_publishes_jobs_registered_without_a_registry(tmp_path, local_registry, sample):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    register(a, None, sample)
    cli(a, None, "validate", SAMPLE_JOB, ok=(3,))
    assert open_versioned_store(local_registry).get(state_key(SAMPLE_JOB)) is None
    cli(a, local_registry, "push")
    cli(b, local_registry, "pull")
    assert answers(b, [SAMPLE_JOB]) == answers(a, [SAMPLE_JOB])


def test_state_json_stays_small_whatever_the_job_size(tmp_path, local_registry):
    study = {"model": "models.seir.SEIR", "scenario": "baseline", "n_replicates": 50, "outputs": ["prevalence"],
             "parameter_sets": [{"beta": 0.1 + i / 1000, "gamma": 0.1} for i in range(60)]}
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(study))
    db = tmp_path / "a.db"
    cli(db, local_registry, "register", str(spec), "--bundle", "sha256:" + "ab" * 32, "--store", str(tmp_path / "s"))
    store = open_versioned_store(local_registry)
    (job_id,) = {k.split("/")[1] for k in store.list_keys("jobs/")}
    state, _ = store.get(state_key(job_id))
    doc = json.loads(state)
    assert doc["metadata"]["jobledger"]["counts"]["expected"] == 3000
    assert len(state) < 4000  # the 3,000 outputs live in the manifest side blob
    manifest = store.get(f"jobs/{job_id}/manifest.jsonl.gz")[0]
    assert len(manifest) < 3000 * 60


# ------------------------------------------------------------------ compare-and-swap between machines

@pytest.fixture
def two_machines(tmp_path, local_registry, sample):
    """Ledgers of machines A and B that both know the sample job through one registry."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    register(a, local_registry, sample)
    cli(b, local_registry, "pull")
    return a, b


def test_a_move_another_machine_made_is_imported_not_repeated(two_machines, local_registry):
    a, b = two_machines
    with mirrored(a, local_registry) as led_a, mirrored(b, local_registry) as led_b:
        led_a.transition(SAMPLE_JOB, states.RUNNING, "seen by A")
        row = led_b.transition(SAMPLE_JOB, states.RUNNING, "seen by B")
        assert row["status"] == "running"
        assert [(t["to_status"], t["reason"]) for t in led_b.transitions(SAMPLE_JOB)] == \
            [("scheduled", "registered (submitted elsewhere)"), ("running", "seen by A")]
        # B is behind on nothing now; a legal move from the registry's status is re-applied on top of it
        led_a.transition(SAMPLE_JOB, states.VALIDATING, "A: complete")
        with pytest.raises(RegistryError, match=r"moved it to validating at .*not moving it to cancelled"):
            led_b.transition(SAMPLE_JOB, states.CANCELLED, "B gives up")
        assert led_b.job(SAMPLE_JOB)["status"] == "running"  # refused: B's ledger is unchanged
    doc = json.loads(open_versioned_store(local_registry).get(state_key(SAMPLE_JOB))[0])
    assert [e[1] for e in doc["metadata"]["jobledger"]["transitions"]] == ["scheduled", "running", "validating"]


def test_a_stale_but_still_legal_move_is_reapplied_on_the_registry_status(two_machines, local_registry):
    a, b = two_machines
    with mirrored(a, local_registry) as led_a, mirrored(b, local_registry) as led_b:
        led_a.transition(SAMPLE_JOB, states.RUNNING, "A: running")
        row = led_b.transition(SAMPLE_JOB, states.CANCELLED, "B: cancel")  # scheduled→cancelled became running→cancelled
        assert row["status"] == "cancelled"
        assert [(t["from_status"], t["to_status"]) for t in led_b.transitions(SAMPLE_JOB)] == \
            [(None, "scheduled"), ("scheduled", "running"), ("running", "cancelled")]
    cli(a, local_registry, "pull")
    assert answers(a, [SAMPLE_JOB]) == answers(b, [SAMPLE_JOB])


def test_a_move_committed_by_another_process_on_the_same_ledger_mid_swap_is_not_repeated(tmp_path, local_registry,
                                                                                          sample):
    """Two processes share one ledger file. A swaps running → validating into the registry; B starts the
    same move, and A's local commit lands between B reading the job row and B reading its history. B must
    see one moment of the ledger (the row and the history together), so the registry gets the move once."""
    db = tmp_path / "shared.db"
    register(db, local_registry, sample)
    led_a, led_b = mirrored(db, local_registry), mirrored(db, local_registry)
    led_a.transition(SAMPLE_JOB, states.RUNNING, "A: running")
    swapped = led_a.mirror.swap_transition(led_a, led_a.job(SAMPLE_JOB), states.VALIDATING, "A: complete", {})
    reads = []
    read_job = led_b.job

    def job_row_then_a_commits(job_id):
        row = read_job(job_id)
        reads.append(row["status"])
        if len(reads) == 2:  # the read inside B's swap, after B fetched state.json
            with led_a.transaction():
                led_a.import_history(SAMPLE_JOB, swapped.history, swapped.columns)
        return row

    led_b.job = job_row_then_a_commits
    row = led_b.transition(SAMPLE_JOB, states.VALIDATING, "B: complete")
    assert reads[:2] == ["running", "running"]
    assert row["status"] == "validating"
    doc = json.loads(open_versioned_store(local_registry).get(state_key(SAMPLE_JOB))[0])
    moves = [(e[0], e[1], e[3]) for e in doc["metadata"]["jobledger"]["transitions"]]
    assert moves[1:] == [("scheduled", "running", "A: running"), ("running", "validating", "A: complete")]
    assert [(t["to_status"], t["reason"]) for t in led_a.transitions(SAMPLE_JOB)][1:] == \
        [("running", "A: running"), ("validating", "A: complete")]


DRIVER = r"""
import random, sys
from jobledger import states
from jobledger.errors import JobledgerError
from jobledger.ledger import Ledger
from jobledger.registry import open_mirror
from jobledger.registry.transfer import pull
from jobledger.validation import validate_job

db, registry, jobs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
random.seed(int(sys.argv[4]))
ledger = Ledger(db, mirror=open_mirror(registry))
pull(ledger, jobs)
random.shuffle(jobs)
NEXT = {states.SCHEDULED: states.RUNNING, states.RUNNING: states.VALIDATING}
conflicts = 0
for job_id in jobs:
    for _ in range(40):
        status = ledger.job(job_id)["status"]
        if status in states.TERMINAL:
            break
        try:
            if status in NEXT:  # what sync does when the runtime reports progress
                ledger.transition(job_id, NEXT[status], f"sync by {sys.argv[4]}")
                ledger.notify_changed(job_id)
            else:
                validate_job(ledger, job_id)
        except JobledgerError as exc:  # another process or machine moved it first: refresh and go on
            conflicts += 1
            pull(ledger, [job_id])
    else:
        raise SystemExit(f"{job_id} never finished")
pull(ledger, jobs)
print(conflicts)
"""


def _run_drivers(dbs, registry, jobs):
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(db), registry, ",".join(jobs), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, db in enumerate(dbs)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "database is locked" not in err, err
    return outs


def _check_registry_histories(registry, jobs):
    store = open_versioned_store(registry)
    for job_id in jobs:
        doc = json.loads(store.get(state_key(job_id))[0])
        moves = [(e[0], e[1]) for e in doc["metadata"]["jobledger"]["transitions"]]
        # every move exactly once, in order, never backwards
        assert moves == [(None, "scheduled"), ("scheduled", "running"), ("running", "validating"),
                         ("validating", "partial")], moves
        assert doc["status"] == "partial"
        assert doc["metadata"]["jobledger"]["counts"]["verified"] == 9
    return store


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_eight_processes_with_their_own_ledgers_through_one_registry(tmp_path, sample, backend, request):
    registry = f"file://{tmp_path / 'registry'}"
    if backend == "azure":
        request.getfixturevalue("azure_conn")
        registry = f"az://job-registry/t-{uuid.uuid4().hex[:10]}"
    jobs = [f"job-{i:08x}" for i in range(1, 4)]
    seed_db = tmp_path / "seed.db"
    for job_id in jobs:
        register(seed_db, registry, sample, job_id)
    dbs = [tmp_path / f"machine{i}.db" for i in range(8)]
    _run_drivers(dbs, registry, jobs)
    _check_registry_histories(registry, jobs)
    for db in dbs:  # a machine that finished early has not seen the runs published after it; now it does
        cli(db, registry, "pull")
    reference = answers(dbs[0], jobs)
    for db in dbs[1:]:
        seen = answers(db, jobs)
        for key in reference:
            if key.startswith("status"):
                # run ids are local to each ledger, so "last" (highest id) may name another of the same runs;
                # the runs themselves are compared by the validation_runs query
                for doc in (seen[key], reference[key]):
                    doc.pop("last_validation", None)
            assert seen[key] == reference[key], key
    assert reference["SELECT * FROM job_summary ORDER BY job_id"][0]["verified"] == 9


def test_eight_processes_sharing_one_ledger_file(tmp_path, local_registry, sample):
    jobs = [f"job-{i:08x}" for i in range(1, 4)]
    db = tmp_path / "shared.db"
    for job_id in jobs:
        register(db, local_registry, sample, job_id)
    _run_drivers([db] * 8, local_registry, jobs)
    _check_registry_histories(local_registry, jobs)
    rows = json.loads(cli(db, None, "sql", "SELECT job_id, count(*) AS n FROM transitions GROUP BY job_id",
                          "--json").stdout)
    assert {r["n"] for r in rows} == {4}


def test_eight_cli_processes_revalidating_the_same_job(tmp_path, local_registry, sample):
    """8 `jobledger validate --force` subprocesses, each with its own ledger, on one job: concurrent
    re-validations join each other's cycle or start a new one, never an illegal or backward move."""
    register(tmp_path / "seed.db", local_registry, sample)
    run_to_verdict(tmp_path / "seed.db", local_registry, SAMPLE_JOB)
    dbs = [tmp_path / f"machine{i}.db" for i in range(8)]
    for db in dbs:
        cli(db, local_registry, "pull")
    procs = [subprocess.Popen([sys.executable, "-m", "jobledger", "--db", str(db), "--registry",
                               local_registry, "validate", "--force",
                               SAMPLE_JOB], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for db in dbs]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [3] * 8, [err for _, err in outs]  # 3: partial, as validated
    assert not any(err for _, err in outs), [err for _, err in outs]
    doc = json.loads(open_versioned_store(local_registry).get(state_key(SAMPLE_JOB))[0])
    moves = [(e[0], e[1]) for e in doc["metadata"]["jobledger"]["transitions"]]
    assert moves[:4] == [(None, "scheduled"), ("scheduled", "running"), ("running", "validating"),
                         ("validating", "partial")]
    cycles = moves[4:]
    assert 1 <= len(cycles) // 2 <= 8 and len(cycles) % 2 == 0
    assert cycles == [("partial", "validating"), ("validating", "partial")] * (len(cycles) // 2)
    assert doc["status"] == "partial" and doc["metadata"]["jobledger"]["counts"]["verified"] == 9


# ------------------------------------------------------------------ faults

@pytest.fixture
def own_azurite(monkeypatch):
    """An Azurite of this test's own, to stop and restart (same port and data)."""
    from azurite import Azurite
    service = Azurite().start()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", service.connection_string)
    yield service
    service.cleanup()


def test_registry_stopping_mid_command_changes_nothing_and_the_rerun_succeeds(tmp_path, sample, own_azurite):
    from jobledger.validation import validate_job
    service = own_azurite
    registry = "az://job-registry"
    db = tmp_path / "a.db"
    register(db, registry, sample)
    with mirrored(db, registry) as ledger:
        ledger.transition(SAMPLE_JOB, states.RUNNING, "running")
        ledger.transition(SAMPLE_JOB, states.VALIDATING, "complete")
    before = answers(db, [SAMPLE_JOB])

    class StopAzuriteWhileObserving:
        def advance(self, n):
            service.stop()  # the store listing is under way; the registry vanishes before the verdict

        def close(self):
            pass

    with mirrored(db, registry) as ledger:
        with pytest.raises(RegistryError) as info:
            validate_job(ledger, SAMPLE_JOB, progress=StopAzuriteWhileObserving())
    message = str(info.value)
    assert "\n" not in message and "az://job-registry" in message and "unreachable" in message
    assert "AccountKey" not in message
    assert answers(db, [SAMPLE_JOB]) == before  # no run, no output state, no status change

    # the CLI says the same in one line while the registry is down
    result = cli(db, registry, "validate", SAMPLE_JOB, ok=(1,))
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: registry az://job-registry")
    assert answers(db, [SAMPLE_JOB]) == before

    service.start()
    cli(db, registry, "validate", SAMPLE_JOB, ok=(3,))
    doc = json.loads(open_versioned_store(registry).get(state_key(SAMPLE_JOB))[0])
    assert doc["status"] == "partial" and doc["metadata"]["jobledger"]["counts"]["verified"] == 9
    assert answers(db, [SAMPLE_JOB])[f"status {SAMPLE_JOB}"]["status"] == "partial"


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "not valid JSON"),
    (b'["a", "list"]', "not a JobState object"),
    (b'{"job_id": "job-00000002", "state": "running"}', "key 'status'"),
    (b'{"job_id": "job-00000002", "status": "exploded"}', "key 'status' has unknown value 'exploded'"),
    (b'{"job_id": "job-00000002", "status": "running", "metadata": {"jobledger": {"format": "v0"}}}',
     "key 'metadata.jobledger'"),
])
def test_corrupt_or_foreign_state_json_is_named_and_affects_nothing_else(tmp_path, local_registry, sample,
                                                                         content, needle):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    register(a, local_registry, sample, "job-00000001")
    register(a, local_registry, sample, "job-00000002")
    store = open_versioned_store(local_registry)
    _, version = store.get(state_key("job-00000002"))
    assert store.put(state_key("job-00000002"), content, version)

    result = cli(b, local_registry, "pull", ok=(1,))
    assert "jobs/job-00000002/state.json" in result.stderr and needle in result.stderr
    assert result.stderr.count("\n") == 1
    listed = json.loads(cli(b, None, "list", "--json").stdout)
    assert [r["job_id"] for r in listed] == ["job-00000001"]  # the healthy job came through

    def seen_by_analyst():
        return [cli(a, None, *args).stdout for args in (("status", "job-00000002", "--json"),
                                                         ("missing", "job-00000002"), ("history", "job-00000002"))]

    before = seen_by_analyst()
    with mirrored(a, local_registry) as ledger:
        with pytest.raises(RegistryError, match="jobs/job-00000002/state.json"):
            ledger.transition("job-00000002", states.RUNNING, "sync")
        ledger.transition("job-00000001", states.RUNNING, "sync")  # its neighbour is unaffected
    assert seen_by_analyst() == before
    assert json.loads(before[0])["status"] == "scheduled"


# ------------------------------------------------------------------ ModelOps interop

MODELOPS_STATE = {
    "job_id": "job-0badcafe", "status": "running", "created_at": "2026-01-05T10:00:00+00:00",
    "updated_at": "2026-01-05T10:05:00+00:00", "k8s_name": "job-0badcafe", "k8s_namespace": "modelops-dask-dev",
    "k8s_uid": "7d2c1e8a-0000-4000-8000-000000000001", "tasks_total": 24, "tasks_completed": 0,
    "error_message": None, "error_code": None, "results_path": None, "expected_outputs": [],
    "verified_outputs": [], "missing_outputs": [], "tasks_verified": 0, "validation_started_at": None,
    "validation_completed_at": None, "validation_attempts": 0, "last_validation_error": None,
    "metadata": {"submitted_by": "mops"},
}


def test_a_state_json_modelops_wrote_is_imported_without_outputs(tmp_path, registry_url):
    store = open_versioned_store(registry_url)
    assert store.create_if_absent(state_key("job-0badcafe"), json.dumps(MODELOPS_STATE).encode())
    db = tmp_path / "b.db"
    assert cli(db, registry_url, "pull", "--since", "7d").stdout == "no jobs to pull\n"  # updated in January
    pulled = json.loads(cli(db, registry_url, "pull", "--since", "2026-01-01", "--json").stdout)
    assert pulled[0]["action"] == "imported" and pulled[0]["expected"] == 0
    assert "no expected outputs" in pulled[0]["note"]
    status = json.loads(cli(db, None, "status", "job-0badcafe", "--json").stdout)
    assert (status["status"], status["k8s_namespace"], status["tasks_total"], status["expected"]) == \
        ("running", "modelops-dask-dev", 24, 0)
    # ModelOps moves it on; a later pull follows
    doc = dict(MODELOPS_STATE, status="validating", updated_at="2026-01-05T11:00:00+00:00")
    _, version = store.get(state_key("job-0badcafe"))
    assert store.put(state_key("job-0badcafe"), json.dumps(doc).encode(), version)
    again = json.loads(cli(db, registry_url, "pull", "job-0badcafe", "--json").stdout)
    assert (again[0]["action"], again[0]["status"]) == ("updated", "validating")


def test_a_state_json_jobledger_wrote_reads_as_a_plain_modelops_jobstate(tmp_path, local_registry, sample):
    db = tmp_path / "a.db"
    register(db, local_registry, sample)
    run_to_verdict(db, local_registry, SAMPLE_JOB)
    path = Path(local_registry[len("file://"):]) / "jobs" / SAMPLE_JOB / "state.json"
    doc = json.loads(path.read_text())  # a plain JSON reader, no jobledger code
    assert tuple(doc) == MODELOPS_KEYS
    assert doc["status"] in ("pending", "submitting", "scheduled", "running", "validating", "succeeded", "partial",
                             "failed", "cancelled")
    assert isinstance(doc["tasks_total"], int) and isinstance(doc["validation_attempts"], int)
    assert all(isinstance(doc[k], list) for k in ("expected_outputs", "verified_outputs", "missing_outputs"))
    assert doc["status"] == "partial" and doc["tasks_verified"] == 9 and doc["validation_attempts"] == 1
    assert isinstance(doc["metadata"], dict) and doc["metadata"]["model"] == "models.seir.StochasticSEIR"


def test_pull_and_push_need_a_registry(tmp_path):
    result = cli(tmp_path / "a.db", None, "pull", ok=(1,))
    assert result.stderr == "error: no registry configured: pass --registry URL or set JOBLEDGER_REGISTRY\n"


def test_register_with_an_unreachable_registry_keeps_nothing_and_a_retry_publishes(tmp_path, sample,
                                                                                 own_azurite):
    service = own_azurite
    registry = "az://job-registry/unreachable"
    db = tmp_path / "ledger.db"
    service.stop()
    spec, store = sample
    failed = cli(db, registry, "register", spec, "--store", store, ok=(1,))
    assert failed.stderr.count("\n") == 1 and "error: " in failed.stderr
    assert "AccountKey" not in failed.stderr
    assert json.loads(cli(db, None, "sql", "SELECT count(*) AS n FROM jobs", "--json").stdout) == [{"n": 0}]
    service.start()
    cli(db, registry, "register", str(spec), "--store", str(store))
    assert open_versioned_store(registry).get(state_key(SAMPLE_JOB)) is not None


# ------------------------------------------------------------------ the write lock and the one writer of status

class LockProbingStore:
    """A real local registry that, on every write, checks whether another process could take this
    ledger's write lock right now (it must: no network round trip may run under BEGIN IMMEDIATE)."""

    def __init__(self, url: str, db: Path):
        self.inner = open_versioned_store(url)
        self.url = self.inner.url
        self.db = db
        self.lock_free: list[bool] = []

    def _probe(self) -> None:
        probe = sqlite3.connect(self.db, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            self.lock_free.append(True)
        except sqlite3.OperationalError:
            self.lock_free.append(False)
        finally:
            probe.close()

    def get(self, key):
        return self.inner.get(key)

    def put(self, key, data, version):
        self._probe()
        return self.inner.put(key, data, version)

    def create_if_absent(self, key, data):
        self._probe()
        return self.inner.create_if_absent(key, data)

    def list_keys(self, prefix=""):
        return self.inner.list_keys(prefix)

    def delete(self, key):
        return self.inner.delete(key)


def test_status_changes_swap_the_registry_with_no_ledger_write_lock_held(tmp_path, local_registry, sample):
    from jobledger.registry.mirror import Mirror
    from jobledger.validation import validate_job
    db = tmp_path / "a.db"
    register(db, local_registry, sample)
    store = LockProbingStore(local_registry, db)
    with Ledger(db, mirror=Mirror(store)) as ledger:
        ledger.transition(SAMPLE_JOB, states.RUNNING, "running")
        ledger.transition(SAMPLE_JOB, states.VALIDATING, "complete")
        validate_job(ledger, SAMPLE_JOB)                       # the verdict, its run and the swap
        validate_job(ledger, SAMPLE_JOB, force=True)           # re-validation: two more moves
        assert ledger.job(SAMPLE_JOB)["status"] == "partial"
    assert len(store.lock_free) >= 6 and all(store.lock_free), store.lock_free
    doc = json.loads(store.get(state_key(SAMPLE_JOB))[0])
    assert [e[1] for e in doc["metadata"]["jobledger"]["transitions"]] == \
        ["scheduled", "running", "validating", "partial", "validating", "partial"]


def test_only_the_ledger_writes_a_status_or_a_transition():
    """Ledger.transition (checked) and Ledger.import_history (unchecked) are the only ways a status changes."""
    package = Path(__file__).resolve().parent.parent / "jobledger"
    for path in package.rglob("*.py"):
        text = path.read_text()
        inserts = len(re.findall(r"INSERT INTO transitions", text))
        status_updates = len(re.findall(r"UPDATE jobs SET status", text))
        if path.name == "ledger.py":
            assert inserts == 1, path
        else:
            assert (inserts, status_updates) == (0, 0), path


class HookedStore(LockProbingStore):
    """A real local registry that runs ``hook`` once, just before the first write to ``key``."""

    def __init__(self, url: str, db: Path, key: str, hook):
        super().__init__(url, db)
        self.key, self.hook = key, hook

    def put(self, key, data, version):
        if key == self.key and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().put(key, data, version)


def test_the_run_a_verdict_names_is_the_run_stored_even_when_another_validation_races(tmp_path, local_registry,
                                                                                       sample):
    """While job 1's verdict is being swapped into the registry, a validation of job 2 in the same ledger file
    stores its run: job 1's history still names job 1's own run."""
    from jobledger.registry.mirror import Mirror
    from jobledger.validation import validate_job
    db = tmp_path / "shared.db"
    first, second = register(db, local_registry, sample, "job-00000001"), register(db, local_registry, sample,
                                                                                    "job-00000002")
    with mirrored(db, local_registry) as ledger:
        for job_id in (first, second):
            ledger.transition(job_id, states.VALIDATING, "runtime finished")

    def validate_the_other_job():
        with mirrored(db, local_registry) as other:
            assert validate_job(other, second).status == "partial"

    store = HookedStore(local_registry, db, state_key(first), validate_the_other_job)
    with Ledger(db, mirror=Mirror(store)) as ledger:
        result = validate_job(ledger, first)
    assert store.hook is None and all(store.lock_free)
    runs = {r["run_id"]: r for r in json.loads(cli(db, None, "sql", "SELECT run_id, job_id, verified, outcome "
                                                   "FROM validation_runs", "--json").stdout)}
    assert len(runs) == 2
    for job_id in (first, second):
        reason = json.loads(cli(db, None, "history", job_id, "--json").stdout)[-1]["reason"]
        named = int(re.search(r"\(run (\d+)\)", reason).group(1))
        assert (runs[named]["job_id"], runs[named]["verified"], runs[named]["outcome"]) == (job_id, 9, "partial")
    assert result.run_id == int(re.search(r"\(run (\d+)\)", json.loads(
        cli(db, None, "history", first, "--json").stdout)[-1]["reason"]).group(1))


def test_registration_publishes_with_no_ledger_write_lock_held(tmp_path, local_registry, sample, spec_dir):
    """The manifest and state.json of a new job, and of a job ModelOps created that gets its spec, are written
    while another process could take the ledger's write lock; what registration published is what the ledger
    then holds (a push afterwards has nothing to change)."""
    from jobledger import api
    from jobledger.registry.mirror import Mirror
    spec, store_dir = sample
    db = tmp_path / "a.db"
    store = LockProbingStore(local_registry, db)
    with Ledger(db, mirror=Mirror(store)) as ledger:
        assert api.register(ledger, spec, store=str(store_dir)).created
    assert len(store.lock_free) == 2 and all(store.lock_free)  # manifest, then state.json
    published = store.get(state_key(SAMPLE_JOB))
    assert store.get(f"jobs/{SAMPLE_JOB}/manifest.jsonl.gz") is not None
    cli(db, local_registry, "push")
    assert store.get(state_key(SAMPLE_JOB)) == published  # same bytes, same version: nothing rewritten
    assert json.loads(cli(tmp_path / "b.db", local_registry, "pull", "--json").stdout)[0]["expected"] == 12
    assert answers(tmp_path / "b.db", [SAMPLE_JOB]) == answers(db, [SAMPLE_JOB])

    # a job ModelOps created, adopted with its spec: the same
    written = (spec_dir / "upstream" / "states" / "job-a0000002.json").read_bytes()
    assert store.inner.create_if_absent(state_key("job-a0000002"), written)
    store.lock_free.clear()
    with Ledger(db, mirror=Mirror(store)) as ledger:
        assert api.register(ledger, spec, store=str(store_dir), job_id="job-a0000002").created
    assert len(store.lock_free) == 2 and all(store.lock_free)  # manifest, then the swap of state.json
    doc = json.loads(store.get(state_key("job-a0000002"))[0])
    assert (doc["status"], doc["metadata"]["jobledger"]["manifest"]) == \
        ("running", "jobs/job-a0000002/manifest.jsonl.gz")
    status = json.loads(cli(db, None, "status", "job-a0000002", "--json").stdout)
    assert (status["status"], status["expected"], status["created_at"]) == \
        ("running", 12, json.loads(written)["created_at"])


class CrashAfterPublishing(LockProbingStore):
    """A real local registry whose writer dies right after state.json was created: the registry has the job,
    the local commit never happens."""

    def create_if_absent(self, key, data):
        created = super().create_if_absent(key, data)
        if key.endswith("/state.json"):
            raise KeyboardInterrupt("killed after publishing")
        return created


def test_a_registration_interrupted_after_publishing_changes_no_ledger_and_a_retry_completes(
        tmp_path, local_registry, sample):
    from jobledger import api
    from jobledger.registry.mirror import Mirror
    spec, store_dir = sample
    db = tmp_path / "a.db"
    with Ledger(db, mirror=Mirror(CrashAfterPublishing(local_registry, db))) as ledger:
        with pytest.raises(KeyboardInterrupt):
            api.register(ledger, spec, store=str(store_dir))
    assert json.loads(cli(db, None, "sql", "SELECT count(*) AS n FROM outputs", "--json").stdout) == [{"n": 0}]
    assert json.loads(cli(db, None, "list", "--json").stdout) == []
    retried = cli(db, local_registry, "register", spec, "--store", store_dir)
    assert retried.stdout == f"{SAMPLE_JOB}: already registered with this spec (12 expected outputs)\n"
    reference = tmp_path / "reference.db"  # the same registration, uninterrupted, elsewhere
    cli(reference, f"file://{tmp_path / 'other-registry'}", "register", spec, "--store", store_dir)
    seen, expected = answers(db, [SAMPLE_JOB]), answers(reference, [SAMPLE_JOB])
    for doc in (seen, expected):  # registered at different moments
        for rows in doc.values():
            for row in rows if isinstance(rows, list) else [rows]:
                for key in ("created_at", "updated_at", "at"):
                    if isinstance(row, dict):
                        row.pop(key, None)
    assert seen == expected


class FailingObservations(LockProbingStore):
    """A real local registry that refuses observed.json.gz: a verdict reaches state.json, its observations
    do not (yet)."""

    def put(self, key, data, version):
        if key.endswith("/observed.json.gz"):
            raise RegistryError(f"registry {self.url} unreachable")
        return super().put(key, data, version)

    def create_if_absent(self, key, data):
        if key.endswith("/observed.json.gz"):
            raise RegistryError(f"registry {self.url} unreachable")
        return super().create_if_absent(key, data)


def test_a_machine_that_has_not_seen_a_verdicts_observations_does_not_overwrite_its_counts(
        tmp_path, local_registry, sample):
    """Machine A's verdict is in state.json but its observations are not published yet when machine B, which
    never saw them, refreshes state.json; A publishes them meanwhile. B must not put its stale counts over A's."""
    from jobledger.registry.mirror import Mirror
    from jobledger.validation import validate_job
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    register(a, local_registry, sample)
    with mirrored(a, local_registry) as ledger:
        ledger.transition(SAMPLE_JOB, states.RUNNING, "running")
    cli(b, local_registry, "pull")                                    # B knows the job as running
    with mirrored(a, local_registry) as ledger:
        ledger.transition(SAMPLE_JOB, states.VALIDATING, "complete")
    with Ledger(a, mirror=Mirror(FailingObservations(local_registry, a))) as ledger:
        with pytest.raises(RegistryError, match="unreachable"):
            validate_job(ledger, SAMPLE_JOB)                          # the verdict is swapped in, 9 verified
    assert json.loads(open_versioned_store(local_registry).get(state_key(SAMPLE_JOB))[0])[
        "metadata"]["jobledger"]["counts"]["verified"] == 9

    def a_publishes_now():  # after B read what it merges, before B writes state.json
        with mirrored(a, local_registry) as ledger:
            ledger.notify_changed(SAMPLE_JOB)

    hooked = HookedStore(local_registry, b, state_key(SAMPLE_JOB), a_publishes_now)
    with Ledger(b, mirror=Mirror(hooked)) as ledger:
        ledger.notify_changed(SAMPLE_JOB)
    doc = json.loads(open_versioned_store(local_registry).get(state_key(SAMPLE_JOB))[0])
    assert (doc["status"], doc["tasks_verified"], doc["metadata"]["jobledger"]["counts"]["verified"]) == \
        ("partial", 9, 9)
    a_publishes_now()                                                 # (if B's write did not call on A)
    cli(b, local_registry, "pull")                                    # and B catches up from A's observations
    assert json.loads(cli(b, None, "status", SAMPLE_JOB, "--json").stdout)["verified"] == 9


def test_sync_reads_the_registry_once_per_move_and_publishes_once(tmp_path, monkeypatch, local_registry):
    """sync swaps each move with the registry (one read of state.json each); the validation it runs
    then neither reads state.json again first (as a validate command on its own does) nor is followed
    by a second publication of what it already published (state.json and the observations blob)."""
    from test_local_runtime import BUNDLE, EXAMPLE_MODEL, study, wait_for_exit

    from jobledger import api
    from jobledger.registry.local import LocalVersionedStore
    db = tmp_path / "ledger.db"
    spec = study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}], n_replicates=1)
    job_id = json.loads(cli(db, local_registry, "submit", spec, "--bundle", BUNDLE, "--runtime", "local",
                            "--store", tmp_path / "store", "--bundle-path", EXAMPLE_MODEL, "--json").stdout)["job_id"]
    wait_for_exit(db, job_id)
    reads: list[str] = []
    get = LocalVersionedStore.get

    def counting_get(self, key):
        reads.append(key)
        return get(self, key)

    monkeypatch.setattr(LocalVersionedStore, "get", counting_get)
    with api.open_ledger(db, registry=local_registry) as ledger:
        (change,) = api.sync_jobs(ledger, [job_id])
    assert change.path == ("scheduled", "validating", "succeeded")
    # one per move (scheduled → validating, → succeeded), one to publish the validation's observations
    assert reads.count(state_key(job_id)) == 3
    assert reads.count(state_key(job_id).replace("state.json", "observed.json.gz")) == 1
