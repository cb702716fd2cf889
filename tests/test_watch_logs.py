"""Waiting and looking: `sync --watch` until done (local runtime and the Kubernetes stand-in),
Ctrl-C during a watch, and `logs [-f] [--tail N]` from a local worker and from a runner pod."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import cli

from jobledger.ledger import Ledger
from jobledger.stores.local import write_result_dir

ROOT = Path(__file__).resolve().parent.parent
NS = "modelops-dask-dev"
BUNDLE = "sha256:" + "7a" * 32


def model_bundle(tmp_path: Path, body: str) -> Path:
    """A bundle directory with one model module, ``models/m.py`` holding ``run(params, seed)``."""
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "__init__.py").write_text("")
    (bundle / "models" / "m.py").write_text("import time\n\n" + body)
    return bundle


def submit_study(tmp_path: Path, bundle: Path, parameter_sets: list[dict], replicates: int = 1) -> str:
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"model": "models.m", "scenario": "run", "parameter_sets": parameter_sets,
                                "n_replicates": replicates, "outputs": ["out"]}))
    out = cli("submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", tmp_path / "store",
              "--bundle-path", bundle, "--json")
    return json.loads(out.stdout)["job_id"]


def jobledger(*args, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobledger", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture
def env(db_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JOBLEDGER_DB": str(db_path)}


def test_watch_follows_a_local_job_until_done_and_exits_as_validate_would(db_path, tmp_path):
    bundle = model_bundle(tmp_path, "def run(params, seed):\n    time.sleep(0.3)\n"
                                    "    if params['beta'] > 0.5:\n        raise ValueError('diverged')\n"
                                    "    return {'out': b'1'}\n")
    job_id = submit_study(tmp_path, bundle, [{"beta": 0.2}, {"beta": 0.9}])
    result = cli("sync", job_id, "--watch", "--interval", "0.1s", "--until-done", ok=(3,))
    lines = result.stdout.strip().splitlines()
    assert lines[-1] in (f"{job_id}: running → validating → partial (1 verified, 1 errored)",
                         f"{job_id}: scheduled → validating → partial (1 verified, 1 errored)")
    assert all(line.startswith(f"{job_id}: ") for line in lines)
    with Ledger(db_path) as ledger:
        assert ledger.job(job_id)["status"] == "partial"
    assert cli("sync", job_id, "--watch", "--until-done", "--interval", "1h", ok=(3,)).stdout == ""  # done


def test_watch_succeeds_with_exit_0_and_prints_json_lines(db_path, tmp_path):
    bundle = model_bundle(tmp_path, "def run(params, seed):\n    return {'out': b'1'}\n")
    job_id = submit_study(tmp_path, bundle, [{"beta": 0.1}], replicates=2)
    result = cli("sync", "--watch", "--interval", "100ms", "--until-done", "--nl")
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    last = changes[-1]
    assert (last["job_id"], last["to"], last["verified"]) == (job_id, "succeeded", 2)


def test_ctrl_c_during_a_watch_exits_130_and_leaves_the_ledger_whole(db_path, tmp_path, env):
    bundle = model_bundle(tmp_path, "def run(params, seed):\n    time.sleep(30)\n    return {'out': b'1'}\n")
    job_id = submit_study(tmp_path, bundle, [{"beta": 0.1}])
    watch = jobledger("sync", job_id, "--watch", "--interval", "0.05s", env=env)
    first = watch.stdout.readline()
    assert first.strip() == f"{job_id}: scheduled → running"
    time.sleep(0.3)  # a few passes later, most likely in the middle of one
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    with Ledger(db_path) as ledger:
        (job,) = ledger.query("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
        last = ledger.transitions(job_id)[-1]
        assert job["status"] == last["to_status"] == "running"
        assert ledger.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cli("cancel", job_id)


def test_logs_follows_a_running_local_worker_until_it_ends(db_path, tmp_path, env):
    bundle = model_bundle(tmp_path, "def run(params, seed):\n"
                                    "    for step in range(3):\n"
                                    "        print(f'seed {seed} step {step}', flush=True)\n"
                                    "        time.sleep(0.4)\n"
                                    "    return {'out': b'1'}\n")
    job_id = submit_study(tmp_path, bundle, [{"beta": 0.1}], replicates=2)
    with Ledger(db_path) as ledger:
        run_dir = Path(json.loads(ledger.job(job_id)["runtime_ref"])["run_dir"])
    follow = jobledger("logs", job_id, "-f", env=env)
    first = follow.stdout.readline()
    assert "step 0" in first and not (run_dir / "exit.json").exists()  # printed while the worker runs
    rest, err = follow.communicate(timeout=60)
    assert follow.returncode == 0 and (run_dir / "exit.json").exists(), err
    steps = [line for line in (first + rest).splitlines() if " step " in line]
    assert len(steps) == 6 and steps == [line for line in (run_dir / "worker.log").read_text().splitlines()
                                         if " step " in line]
    assert cli("logs", job_id, "--tail",
               "1").stdout == (run_dir / "worker.log").read_text().splitlines(True)[-1]
    assert cli("logs", job_id).stdout == (run_dir / "worker.log").read_text()


def test_logs_of_a_job_submitted_elsewhere_is_a_one_line_error(db_path, spec_dir, tmp_path):
    cli("register", spec_dir / "sample" / "job-5a11e0c3.json", "--store", tmp_path)
    result = cli("logs", "job-5a11e0c3", ok=(1,))
    assert result.stderr == ("error: job-5a11e0c3 was submitted elsewhere: jobledger does not know where its "
                             "log is\n")


# ---------------------------------------------------------------- Kubernetes stand-in

@pytest.fixture
def kube(standin, tmp_path, monkeypatch, env):
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    env["KUBECONFIG"] = str(kubeconfig)
    standin.clear()
    standin.reset_calls()
    return standin


@pytest.fixture
def k8s_job(kube, azure_conn, db_path, golden, tmp_path, env) -> str:
    env["AZURE_STORAGE_CONNECTION_STRING"] = azure_conn
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(golden["simjob_spec_example"]))
    cli("submit", spec, "--runtime", "k8s", "--store", tmp_path / "store")
    return golden["simjob_spec_example"]["job_id"]


def test_spec_is_the_blob_the_runner_reads_byte_for_byte(k8s_job, azure_conn):
    from azure.storage.blob import BlobServiceClient
    blob = BlobServiceClient.from_connection_string(azure_conn).get_blob_client("jobs",
                                                                                f"jobs/simulation/{k8s_job}.json")
    assert cli("spec", k8s_job).stdout.encode() == blob.download_blob().readall() + b"\n"


def test_watch_follows_a_kubernetes_job_until_done(k8s_job, kube, db_path, tmp_path):
    with Ledger(db_path) as ledger:
        rows = ledger.query("SELECT path, run_seed, param_id FROM expected_outputs WHERE job_id = ?",
                            (k8s_job,))
    for row in rows:  # what the runner writes
        write_result_dir(tmp_path / "store" / row["path"], bundle_ref="b", entrypoint="e", params={},
                         param_id=row["param_id"], seed=row["run_seed"], outputs={"incidence": b"1",
                                                                                  "prevalence": b"2"})

    def runner():
        time.sleep(0.4)
        kube.set_status(NS, k8s_job, {"active": 1})
        time.sleep(0.6)
        kube.set_status(NS, k8s_job, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})

    threading.Thread(target=runner, daemon=True).start()
    lines = cli("sync", k8s_job, "--watch", "--interval", "0.1s", "--until-done").stdout.strip().splitlines()
    assert lines == [f"{k8s_job}: scheduled → running",
                     f"{k8s_job}: running → validating → succeeded (4 verified)"]
    lists = [c for c in kube.calls("GET") if c["path"].endswith("/jobs")]
    assert len(lists) >= 3
    assert all(c["query"]["labelSelector"] == "app=modelops,component=job-runner" for c in lists)


def test_logs_of_the_runner_pod_with_tail_and_follow(k8s_job, kube, env):
    kube.write_log(NS, k8s_job, "starting runner\nloading bundle\n")
    assert cli("logs", k8s_job).stdout == "starting runner\nloading bundle\n"
    assert cli("logs", k8s_job, "--tail", "1").stdout == "loading bundle\n"
    follow = jobledger("logs", k8s_job, "-f", env=env)
    assert follow.stdout.readline() == "starting runner\n"
    assert follow.stdout.readline() == "loading bundle\n"
    kube.write_log(NS, k8s_job, "task 1 of 4 done\n")
    assert follow.stdout.readline() == "task 1 of 4 done\n"  # arrives while the container still runs
    kube.write_log(NS, k8s_job, "all done\n")
    kube.end_log(NS, k8s_job)
    rest, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert rest == "all done\n"
    (log_call,) = [c for c in kube.calls("GET")
                   if c["path"].endswith("/log") and c["query"].get("follow") == "true"]
    assert log_call["query"]["container"] == "job-runner" and log_call["query"]["follow"] == "true"
    pods = [c for c in kube.calls("GET") if c["path"].endswith("/pods")]
    assert pods and all(c["query"]["labelSelector"] == f"job-name={k8s_job}" for c in pods)
