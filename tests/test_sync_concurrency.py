"""Eight machines run `jobledger sync` on the same Kubernetes jobs through one registry, each with its
own ledger: every job makes each move exactly once, nothing goes backwards, nothing crashes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_mirror import cli

from jobledger.registry import open_versioned_store
from jobledger.registry.state import state_key

NS = "modelops-dask-dev"
JOBS = [f"job-{i:08x}" for i in range(0x10, 0x14)]


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_eight_processes_sync_the_same_jobs_through_one_registry(tmp_path, spec_dir, standin, backend, request):
    registry = f"file://{tmp_path / 'registry'}"
    if backend == "azure":
        request.getfixturevalue("azure_conn")
        registry = f"az://job-registry/sync-{os.getpid()}-{id(tmp_path) % 100000}"
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    spec = spec_dir / "sample" / "job-5a11e0c3.json"
    store = spec_dir / "sample" / "provenance"
    for job_id in JOBS:
        cli(tmp_path / "seed.db", registry, "register", str(spec), "--job-id", job_id, "--store", str(store),
            "--namespace", NS)
        labels = {"app": "modelops", "component": "job-runner", "job-id": job_id}
        standin.add_job(NS, {"metadata": {"name": job_id, "labels": labels}, "spec": {}})
        standin.set_status(NS, job_id, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    dbs = [tmp_path / f"machine{i}.db" for i in range(8)]
    for db in dbs:
        cli(db, registry, "pull")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    procs = [subprocess.Popen([sys.executable, "-m", "jobledger", "--db", str(db), "--registry", registry,
                               "sync", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for db in dbs]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "locked" not in err, err
    versioned = open_versioned_store(registry)
    for job_id in JOBS:
        doc = json.loads(versioned.get(state_key(job_id))[0])
        moves = [(e[0], e[1]) for e in doc["metadata"]["jobledger"]["transitions"]]
        assert moves == [(None, "scheduled"), ("scheduled", "validating"), ("validating", "partial")], moves
        assert doc["metadata"]["jobledger"]["counts"]["verified"] == 9
    for db in dbs:  # every machine ends with the same verdict and keeps every verified output
        cli(db, registry, "pull")
        rows = json.loads(cli(db, None, "sql", "--json",
                              "SELECT job_id, status, verified FROM job_summary ORDER BY job_id").stdout)
        assert rows == [{"job_id": j, "status": "partial", "verified": 9} for j in JOBS]


def test_a_machine_that_syncs_late_takes_the_verdict_already_made(tmp_path, spec_dir, standin, monkeypatch):
    registry = f"file://{tmp_path / 'registry'}"
    monkeypatch.setenv("KUBECONFIG", str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    job_id = JOBS[0]
    cli(tmp_path / "a.db", registry, "register", str(spec_dir / "sample" / "job-5a11e0c3.json"), "--job-id", job_id,
        "--store", str(spec_dir / "sample" / "provenance"), "--namespace", NS)
    standin.add_job(NS, {"metadata": {"name": job_id, "labels": {"app": "modelops", "component": "job-runner",
                                                                 "job-id": job_id}}, "spec": {}})
    standin.set_status(NS, job_id, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    cli(tmp_path / "b.db", registry, "pull")  # machine B still sees the job scheduled
    assert "scheduled → validating → partial" in cli(tmp_path / "a.db", registry, "sync").stdout
    late = json.loads(cli(tmp_path / "b.db", registry, "sync", "--json").stdout)
    assert [(r["job_id"], r["path"], r["error"]) for r in late] == [(job_id, ["scheduled", "partial"], None)]
    assert "another machine" in late[0]["reason"] and late[0]["verified"] == 9
    history = json.loads(cli(tmp_path / "b.db", None, "history", job_id, "--json").stdout)
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "scheduled"), ("scheduled", "validating"), ("validating", "partial")]


@pytest.mark.parametrize("command", ["sync", "validate"])
def test_eight_processes_on_one_ledger_the_losers_report_the_winners_verdict(tmp_path, spec_dir, standin, command,
                                                                           monkeypatch):
    """No registry, one ledger file, eight processes at once: each move is made once, and a process that
    lost the race reports the verdict the winner made (exit 0 for sync; validate exits by the verdict)."""
    db = tmp_path / "one.db"
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    spec = spec_dir / "sample" / "job-5a11e0c3.json"
    store = spec_dir / "sample" / "provenance"
    for job_id in JOBS:
        cli(db, None, "register", str(spec), "--job-id", job_id, "--store", str(store), "--namespace", NS)
        labels = {"app": "modelops", "component": "job-runner", "job-id": job_id}
        standin.add_job(NS, {"metadata": {"name": job_id, "labels": labels}, "spec": {}})
        standin.set_status(NS, job_id, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    if command == "validate":
        cli(db, None, "sync", "--no-validate")  # every job waits in 'validating'
        argv = ["validate", JOBS[0]]
    else:
        argv = ["sync"]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    procs = [subprocess.Popen([sys.executable, "-m", "jobledger", "--db", str(db), *argv], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == (0 if command == "sync" else 3), (proc.returncode, out, err)
        assert "Traceback" not in err and "illegal transition" not in err and "locked" not in err, err
    rows = json.loads(cli(db, None, "sql", "--json", "SELECT job_id, to_status, count(*) AS n FROM transitions "
                                                  "GROUP BY job_id, to_status ORDER BY job_id, to_status").stdout)
    assert all(r["n"] == 1 for r in rows), rows  # no move made twice
    assert {r["to_status"] for r in rows if r["job_id"] == JOBS[0]} == {"scheduled", "validating", "partial"}
    runs = json.loads(cli(db, None, "sql", "--json", "SELECT count(*) AS n FROM validation_runs").stdout)
    assert runs[0]["n"] >= 1
