"""The Kubernetes runtime driven through the real `kubernetes` client against a loopback API
stand-in, with the spec blob in a real Azurite."""
from __future__ import annotations

import json

import pytest
import yaml

from jobledger.ledger import Ledger
from jobledger.runtimes import ACTIVE, FAILED, PENDING, SUCCEEDED
from jobledger.runtimes.kubernetes import job_status
from jobledger.stores.local import write_result_dir

from helpers import cli

NS = "modelops-dask-dev"


@pytest.fixture
def kube(standin, tmp_path, monkeypatch):
    """The real client configured from a generated kubeconfig that points at the stand-in."""
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("MODELOPS_BUNDLE_REGISTRY", raising=False)
    standin.jobs.clear()
    standin.deletions.clear()
    standin.reset_calls()
    return standin


@pytest.fixture
def spec_file(tmp_path, golden):
    def make(job_id: str = "job-deadbeef") -> str:
        path = tmp_path / f"{job_id}.json"
        path.write_text(json.dumps({**golden["simjob_spec_example"], "job_id": job_id}))
        return str(path)
    return make


def blob_names(conn: str) -> list[str]:
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(conn).get_container_client("jobs")
    return sorted(b.name for b in container.list_blobs()) if container.exists() else []


def test_submit_uploads_the_spec_and_creates_the_runner_job_field_by_field(db_path, kube, azure_conn, spec_file,
                                                                           golden):
    out = cli("submit", spec_file(), "--runtime", "k8s", "--store", "az://results/runs")
    assert out.stdout.strip() == "job-deadbeef: pending → submitting → scheduled (k8s, 4 expected outputs)"
    job = kube.job(NS, "job-deadbeef")
    labels = {"app": "modelops", "component": "job-runner", "job-id": "job-deadbeef"}
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == "job-deadbeef" and job["metadata"]["namespace"] == NS
    assert job["metadata"]["labels"] == labels
    assert job["spec"] == {
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": "default",
                "restartPolicy": "Never",
                "containers": [{
                    "name": "job-runner",
                    "image": "ghcr.io/institutefordiseasemodeling/modelops-dask-runner:latest",
                    "env": [
                        {"name": "JOB_BLOB_KEY", "value": "jobs/simulation/job-deadbeef.json"},
                        {"name": "AZURE_STORAGE_CONNECTION_STRING",
                         "valueFrom": {"secretKeyRef": {"name": "modelops-storage",
                                                        "key": "AZURE_STORAGE_CONNECTION_STRING"}}},
                        {"name": "DASK_SCHEDULER_ADDRESS", "value": "tcp://dask-scheduler:8786"},
                        {"name": "MODELOPS_BUNDLE_REGISTRY", "value": "modelopsdemoacr.azurecr.io/seir-bundle"},
                    ],
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                }],
            },
        },
    }
    from azure.storage.blob import BlobServiceClient
    blob = BlobServiceClient.from_connection_string(azure_conn).get_blob_client("jobs", "jobs/simulation/job-deadbeef.json")
    uploaded = json.loads(blob.download_blob().readall())
    assert uploaded == {**golden["simjob_spec_example"], "job_id": "job-deadbeef"}
    assert list(uploaded) == ["job_type", "job_id", "bundle_ref", "priority", "metadata", "tasks"]
    assert list(uploaded["tasks"][0]) == ["entrypoint", "bundle_ref", "params", "seed", "outputs"]
    with Ledger(db_path) as ledger:
        row = ledger.job("job-deadbeef")
        assert (row["status"], row["runtime"], row["k8s_name"], row["k8s_namespace"], row["k8s_uid"]) == \
               ("scheduled", "k8s", "job-deadbeef", NS, job["metadata"]["uid"])
        assert [t["to_status"] for t in ledger.transitions("job-deadbeef")] == ["pending", "submitting", "scheduled"]
    blob.delete_blob()


def test_a_submit_failing_part_way_leaves_the_job_failed_and_nothing_orphaned(db_path, kube, azure_conn, spec_file):
    kube.fail_next("POST", 403, "Forbidden", 'jobs.batch is forbidden: User "tester" cannot create jobs')
    result = cli("submit", spec_file("job-0badc0de"), "--runtime", "k8s", "--store", "az://results/runs", ok=False)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: job-0badc0de: submit failed: create Job: Forbidden: jobs.batch is forbidden")
    assert kube.jobs == {} and len(kube.calls("POST")) == 1
    assert "jobs/simulation/job-0badc0de.json" not in blob_names(azure_conn)  # uploaded, then removed
    with Ledger(db_path) as ledger:
        row = ledger.job("job-0badc0de")
        assert (row["status"], row["error_code"]) == ("failed", "SubmitFailed") and "Forbidden" in row["error_message"]
        assert [t["to_status"] for t in ledger.transitions("job-0badc0de")] == ["pending", "submitting", "failed"]


def test_a_submit_that_cannot_work_is_refused_before_anything_is_recorded(db_path, kube, azure_conn, spec_file,
                                                                         monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    result = cli("submit", spec_file("job-0badc0de"), "--runtime", "k8s", "--store", "az://results/runs", ok=False)
    assert result.stderr == ("error: submitting to Kubernetes uploads the spec blob: set "
                             "AZURE_STORAGE_CONNECTION_STRING\n")
    assert kube.calls() == [] and not Ledger(db_path).job_exists("job-0badc0de")


def test_submit_dry_run_prints_spec_and_job_and_changes_nothing(db_path, kube, azure_conn, spec_file):
    out = cli("submit", spec_file("job-0000d0d0"), "--runtime", "k8s", "--namespace", "team-a", "--image", "img:1",
              "--dry-run")
    doc = yaml.safe_load(out.stdout)
    assert doc["spec"]["job_id"] == "job-0000d0d0"
    assert doc["spec_blob"] == {"container": "jobs", "key": "jobs/simulation/job-0000d0d0.json"}
    assert doc["job"]["metadata"]["namespace"] == "team-a"
    assert doc["job"]["spec"]["template"]["spec"]["containers"][0]["image"] == "img:1"
    assert not db_path.exists() and kube.calls() == [] and "jobs/simulation/job-0000d0d0.json" not in blob_names(azure_conn)


def test_job_object_service_account_registry_runner_tag_and_postgres_secret(db_path, kube, azure_conn,
                                                                          spec_file, monkeypatch):
    monkeypatch.setenv("MODELOPS_RUNNER_TAG", "v0.9.2")
    monkeypatch.setenv("MODELOPS_BUNDLE_REGISTRY", "registry.example:5000/bundles")
    cli("submit", spec_file("job-00005a5a"), "--runtime", "k8s", "--store", "az://results/runs",
        "--service-account", "modelops-runner", "--postgres-secret", "modelops-postgres")
    pod = kube.job(NS, "job-00005a5a")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "modelops-runner"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/institutefordiseasemodeling/modelops-dask-runner:v0.9.2"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MODELOPS_BUNDLE_REGISTRY"] == "registry.example:5000/bundles"  # the environment beats the ref
    assert env["POSTGRES_URL"] == {"secretKeyRef": {"name": "modelops-postgres", "key": "POSTGRES_URL"}}
    assert [e["name"] for e in container["env"]] == ["JOB_BLOB_KEY", "AZURE_STORAGE_CONNECTION_STRING",
                                                     "DASK_SCHEDULER_ADDRESS", "MODELOPS_BUNDLE_REGISTRY",
                                                     "POSTGRES_URL"]
    # An explicit --image is used as given, whatever MODELOPS_RUNNER_TAG says.
    out = cli("submit", spec_file("job-00005a5b"), "--runtime", "k8s", "--image", "mine:1", "--dry-run",
              "--json")
    assert json.loads(out.stdout)["job"]["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:1"

    # A bare sha256: bundle ref names no registry: with none in the environment, refused before anything.
    monkeypatch.delenv("MODELOPS_BUNDLE_REGISTRY")
    bare = spec_file("job-0000ba4e")
    doc = json.loads(open(bare).read())
    bare_ref = "sha256:" + doc["bundle_ref"].rsplit(":", 1)[1]
    for holder in (doc, *doc["tasks"]):
        holder["bundle_ref"] = bare_ref
    with open(bare, "w") as handle:
        json.dump(doc, handle)
    kube.reset_calls()
    for extra in ([], ["--dry-run"]):
        result = cli("submit", bare, "--runtime", "k8s", "--store", "az://results/runs", *extra, ok=False)
        assert result.exit_code == 1 and result.stderr == (
            f"error: no bundle registry for {bare_ref[:19]}…: set MODELOPS_BUNDLE_REGISTRY or use a "
            f"'<registry>/<repo>@sha256:…' bundle reference\n")
    assert kube.calls() == [] and "jobs/simulation/job-0000ba4e.json" not in blob_names(azure_conn)
    assert not Ledger(db_path).job_exists("job-0000ba4e")
    monkeypatch.setenv("MODELOPS_BUNDLE_REGISTRY", "acr.example/bundles")
    cli("submit", bare, "--runtime", "k8s", "--store", "az://results/runs")
    env = kube.job(NS, "job-0000ba4e")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELOPS_BUNDLE_REGISTRY", "value": "acr.example/bundles"} in env
    assert kube.job(NS, "job-0000ba4e")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


SHAPES = {
    # job id: (status the test gives the Job, status sync must reach with --no-validate)
    "job-00000001": ({"active": 1}, "running"),
    "job-00000002": ({"active": 1, "failed": 2}, "running"),  # a retry, not a failure
    "job-00000003": ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, "validating"),
    "job-00000004": ({"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                   "message": "Job has reached the specified backoff limit"}]},
                     "failed"),
    "job-00000005": ({"active": 0, "failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline"}]}, "failed"),
    "job-00000006": (None, "validating"),                      # deleted by its TTL: 404
    "job-00000007": ({"active": 0, "succeeded": 0, "failed": 0}, "scheduled"),  # all counts omitted: no pods yet
    "job-00000008": ({"active": 1, "conditions": [{"type": "Complete", "status": "False"}]}, "running"),
}


def test_sync_moves_every_status_shape_with_one_list_call(db_path, kube, azure_conn, spec_file, tmp_path):
    store, empty_store = tmp_path / "store", tmp_path / "empty-store"
    empty_store.mkdir()
    for job_id in SHAPES:
        cli("submit", spec_file(job_id), "--runtime", "k8s", "--store", empty_store if job_id == "job-00000006" else store)
    # A Job created without the runner labels (registered, not submitted by jobledger): found by GET.
    cli("register", spec_file("job-00000009"), "--namespace", NS, "--store", store)
    kube.add_job(NS, {"metadata": {"name": "job-00000009"}, "spec": {}})
    kube.set_status(NS, "job-00000009", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    for job_id, (status, _) in SHAPES.items():
        if status is None:
            kube.delete(NS, job_id)
        else:
            kube.set_status(NS, job_id, status)
    assert "active" not in kube.job(NS, "job-00000007")["status"]  # zero counts are absent, as from the API server

    with Ledger(db_path) as ledger:
        history_before = ledger.query("SELECT count(*) AS n FROM transitions")
    kube.reset_calls()
    preview = json.loads(cli("sync", "--dry-run", "--no-validate", "--json").stdout)
    assert {r["job_id"]: r["path"][-1] for r in preview} == {**{j: s for j, (_, s) in SHAPES.items()},
                                                             "job-00000009": "validating"}
    assert "job-00000006: scheduled → validating → (validate)" in cli("sync", "--dry-run").stdout
    with Ledger(db_path) as ledger:
        assert ledger.query("SELECT count(*) AS n FROM transitions") == history_before

    kube.reset_calls()
    lines = cli("sync", "--no-validate").stdout.strip().splitlines()
    lists = [c for c in kube.calls("GET") if c["path"].endswith("/jobs")]
    gets = sorted(c["path"].rsplit("/", 1)[1] for c in kube.calls("GET") if not c["path"].endswith("/jobs"))
    assert len(lists) == 1 and lists[0]["query"]["labelSelector"] == "app=modelops,component=job-runner"
    assert gets == ["job-00000006", "job-00000009"]
    assert "job-00000004: scheduled → failed (k8s: failed (BackoffLimitExceeded): Job has reached the specified " \
           "backoff limit)" in lines
    assert "job-00000006: scheduled → validating" in lines
    assert not any(line.startswith("job-00000007") for line in lines)
    with Ledger(db_path) as ledger:
        got = {r["job_id"]: r for r in ledger.query("SELECT * FROM jobs")}
        assert {j: got[j]["status"] for j in SHAPES} == {j: s for j, (_, s) in SHAPES.items()}
        assert got["job-00000009"]["status"] == "validating"
        assert (got["job-00000005"]["error_code"], got["job-00000005"]["error_message"]) == \
               ("DeadlineExceeded", "Job was active longer than specified deadline")

    # Validation decides the finished ones by their artifacts: job 3 wrote everything; the vanished job 6
    # (its own store) nothing, so only now, from its artifacts, is it failed.
    for row in Ledger(db_path).query("SELECT o.path, o.run_seed, p.param_id FROM outputs o JOIN params p "
                                     "USING (param_key) WHERE job_id = 'job-00000003'"):
        write_result_dir(store / row["path"], bundle_ref="b", entrypoint="e", params={}, param_id=row["param_id"],
                         seed=row["run_seed"], outputs={"incidence": b"1", "prevalence": b"2"})
    kube.set_status(NS, "job-00000001", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    lines = cli("sync", "job-00000001", "job-00000003", "job-00000006").stdout.strip().splitlines()
    # The store is shared: job 1 has the same outputs as job 3, so it is complete too.
    assert lines == ["job-00000001: running → validating → succeeded (4 verified)",
                     "job-00000003: validating → succeeded (4 verified)",
                     "job-00000006: validating → failed (0 verified, 4 missing)"]


def test_cancel_deletes_the_job_with_background_propagation(db_path, kube, azure_conn, spec_file):
    cli("submit", spec_file("job-0000cafe"), "--runtime", "k8s", "--store", "az://results/runs")
    wrong = cli("cancel", "job-0000cafe", "--context", "elsewhere", ok=False)
    assert wrong.exit_code == 1 and "Expected object with name elsewhere" in wrong.stderr
    assert kube.calls("DELETE") == [] and Ledger(db_path).job("job-0000cafe")["status"] == "scheduled"
    assert cli("cancel", "job-0000cafe", "--context", "standin").stdout.strip() == "job-0000cafe: cancelled"
    assert kube.deletions == [{"namespace": NS, "name": "job-0000cafe", "propagationPolicy": "Background"}]
    assert kube.job(NS, "job-0000cafe") is None
    again = cli("cancel", "job-0000cafe")  # a no-op that says so
    assert again.stdout.strip() == "job-0000cafe: already cancelled: nothing to do"
    assert len(kube.deletions) == 1


def test_job_status_reads_conditions_first_and_tolerates_absent_counts():
    assert job_status({}).phase == PENDING
    assert job_status({"status": None}).phase == PENDING
    assert job_status({"status": {"active": None, "failed": None, "conditions": None}}).phase == PENDING
    assert job_status({"status": {"failed": 1}}).phase == ACTIVE  # between retries
    retry = job_status({"status": {"active": 1, "failed": 2}})
    assert (retry.phase, retry.reason) == (ACTIVE, "Retrying")
    failed = job_status({"status": {"active": 1, "conditions": [{"type": "Failed", "status": "True",
                                                                 "reason": "DeadlineExceeded"}]}})
    assert (failed.phase, failed.reason) == (FAILED, "DeadlineExceeded")
    assert job_status({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).phase == SUCCEEDED


def test_api_error_messages_are_scrubbed_of_secrets(db_path, kube, azure_conn, spec_file):
    kube.fail_next("POST", 403, "Forbidden", f"denied for {azure_conn} sig=TOPSECRET")
    result = cli("submit", spec_file("job-5ec0e7ed"), "--runtime", "k8s", "--store", "az://results/runs", ok=(1,))
    assert result.stderr.startswith("error: job-5ec0e7ed: submit failed: create Job: Forbidden: denied for")
    assert "TOPSECRET" not in result.stderr and azure_conn not in result.stderr and "Eby8vdM02" not in result.stderr
    assert result.stderr.count("\n") == 1
