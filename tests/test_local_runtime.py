"""The local runtime end to end with real worker subprocesses, the worker's result layout,
idempotent execution and spec pruning."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path


from jobledger.contracts import SimTask, UniqueParameterSet, load_spec, sim_return_task_id
from jobledger.ledger import Ledger
from jobledger.manifest import expected_outputs, runner_seeds
from jobledger.layout import Layout
from jobledger.runtimes.local import runs_dir_for

from helpers import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "scripts" / "example_model"
BUNDLE = "sha256:" + "5e" * 32


def study(path: Path, parameter_sets, n_replicates=2, model="models.sir", scenario="baseline") -> Path:
    path.write_text(json.dumps({"model": model, "scenario": scenario, "parameter_sets": parameter_sets,
                                "n_replicates": n_replicates, "outputs": ["incidence", "prevalence"]}))
    return path


def wait_for_exit(db_path: Path, job_id: str, timeout: float = 60.0) -> dict:
    run_dir = runs_dir_for(db_path) / job_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "exit.json").exists():
            return json.loads((run_dir / "exit.json").read_text())
        time.sleep(0.05)
    raise AssertionError(f"worker of {job_id} did not finish: {(run_dir / 'worker.log').read_text()}")


def submit_local(spec: Path, store: Path, bundle_path: Path = EXAMPLE_MODEL) -> str:
    out = cli("submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store, "--bundle-path", bundle_path,
              "--json")
    return json.loads(out.stdout)["job_id"]


def status_of(job_id: str) -> dict:
    return json.loads(cli("status", job_id, "--json").stdout)


def test_whole_loop_submit_run_sync_delete_resume_complete(db_path, tmp_path):
    store = tmp_path / "store"
    spec = study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.6, "gamma": 0.2}])
    job_id = submit_local(spec, store)
    assert status_of(job_id)["status"] == "scheduled"
    assert wait_for_exit(db_path, job_id)["ran"] == 4

    line = cli("sync").stdout.strip()
    assert line == f"{job_id}: scheduled → validating → succeeded (4 verified)"
    history = json.loads(cli("history", job_id, "--json").stdout)
    assert [h["to_status"] for h in history] == ["pending", "submitting", "scheduled", "validating", "succeeded"]

    # An output disappears: re-validation sees it and resume runs only that task.
    with Ledger(db_path) as ledger:
        rows = ledger.query("SELECT path FROM outputs WHERE job_id = ? ORDER BY output_id", (job_id,))
    lost = rows[2]["path"]
    kept_mtimes = {r["path"]: (store / r["path"] / "result.json").stat().st_mtime_ns for r in rows if r["path"] != lost}
    shutil.rmtree(store / lost)
    assert cli("validate", "--force", job_id, ok=False).exit_code == 3
    assert status_of(job_id)["status"] == "partial"

    plan = json.loads(cli("resume", job_id, "--dry-run", "--json").stdout)
    assert plan["parent"] == job_id and plan["outputs"] == 1 and plan["overcompute"] == 0
    out = cli("resume", job_id).stdout
    child = f"{job_id}-r1"
    assert f"{child}: scheduled (1 expected outputs)" in out
    with Ledger(db_path) as ledger:
        assert [r["path"] for r in ledger.query("SELECT path FROM outputs WHERE job_id = ?", (child,))] == [lost]
        assert ledger.job(child)["parent_job_id"] == job_id
    assert wait_for_exit(db_path, child)["ran"] == 1
    assert cli("sync").stdout.strip() == f"{child}: scheduled → validating → succeeded (1 verified)"
    assert {p: (store / p / "result.json").stat().st_mtime_ns for p in kept_mtimes} == kept_mtimes
    # The child verified the lost path: resuming the parent again has nothing left to do.
    assert json.loads(cli("resume", job_id, "--dry-run", "--json").stdout)["outputs"] == 0
    assert cli("resume", job_id, ok=False).stderr.startswith(f"error: {job_id}: nothing to resume")

    cli("validate", "--force", job_id)
    doc = status_of(job_id)
    assert doc["status"] == "succeeded" and doc["verified"] == 4
    assert [(n["job_id"], n["status"]) for n in doc["lineage"]] == [(child, "succeeded")]

    # Idempotent execution: another job with the same tasks reuses every stored result.
    cli("submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store, "--bundle-path",
              EXAMPLE_MODEL, "--job-id", "job-0000aaaa")
    record = wait_for_exit(db_path, "job-0000aaaa")
    assert (record["ran"], record["reused"]) == (0, 4)
    assert {p: (store / p / "result.json").stat().st_mtime_ns for p in kept_mtimes} == kept_mtimes


def test_worker_writes_the_modelops_layout_and_error_results(db_path, tmp_path):
    store = tmp_path / "store"
    spec = study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 5.0, "gamma": 0.1}], n_replicates=3)
    job_id = submit_local(spec, store)
    record = wait_for_exit(db_path, job_id)
    assert (record["ran"], record["errored"], record["returncode"]) == (6, 3, 0)

    job = load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE)
    layout = Layout.parse("token")
    seeds = runner_seeds(job.tasks)
    assert seeds != [t.seed for t in job.tasks]  # replicate seeds differ from what the runner executes
    import sys
    sys.path.insert(0, str(EXAMPLE_MODEL))
    from models import sir
    for task, seed in zip(job.tasks, seeds):
        directory = store / layout.sim_path(BUNDLE, task.param_id, seed)
        metadata = json.loads((directory / "metadata.json").read_text())
        assert (metadata["param_id"], metadata["seed"], metadata["entrypoint"], metadata["params"]) == \
               (task.param_id, seed, "models.sir/baseline", task.params.params)
        result = json.loads((directory / "result.json").read_text())
        if task.params.params["beta"] == 5.0:
            assert sorted(os.listdir(directory)) == ["error_details.arrow", "metadata.json", "result.json"]
            assert result["error"]["error_type"] == "ValueError" and "R0 diverged" in result["error"]["message"]
            details = (directory / "error_details.arrow").read_bytes()
            assert result["error_details"] == {"size": len(details),
                                               "checksum": hashlib.blake2b(details, digest_size=32).hexdigest()}
            continue
        expected = sir.baseline(task.params.params, seed)
        assert sorted(os.listdir(directory)) == ["artifact_incidence.arrow", "artifact_prevalence.arrow",
                                                 "metadata.json", "result.json"]
        assert result["task_id"] == sim_return_task_id(task.param_id, seed, ["incidence", "prevalence"])
        for name, data in expected.items():
            assert (directory / f"artifact_{name}.arrow").read_bytes() == data
            assert result["outputs"][name] == {"size": len(data),
                                               "checksum": hashlib.blake2b(data, digest_size=32).hexdigest()}
    assert cli("sync").stdout.strip() == f"{job_id}: scheduled → validating → partial (3 verified, 3 errored)"


def test_cancel_stops_the_worker_process_group(db_path, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "sleepy").mkdir()
    (bundle / "sleepy" / "model.py").write_text("import time\n\n"
                                                "def nap(params, seed):\n    time.sleep(60)\n    return {}\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": "sleepy.model", "scenario": "nap", "parameter_sets": [{"x": 1}]}))
    job_id = submit_local(spec, tmp_path / "store", bundle)
    with Ledger(db_path) as ledger:
        ref = json.loads(ledger.job(job_id)["runtime_ref"])
    assert cli("sync").stdout.strip() == f"{job_id}: scheduled → running"
    assert cli("cancel", job_id).stdout.strip() == f"{job_id}: cancelled"
    from jobledger.runtimes.local import process_alive
    assert not process_alive(ref["pid"], ref["start_time"])
    assert "no changes" in cli("sync").stdout
    assert status_of(job_id)["status"] == "cancelled"


def test_idempotent_service_returns_stored_results_as_sim_returns_and_delegates_the_rest(tmp_path):
    from dataclasses import replace

    from jobledger.idempotent import IdempotentSimulationService
    from jobledger.runtimes.worker import EntrypointResolver, LocalSimulationService
    from jobledger.simreturn import SimReturn, TableArtifact
    from jobledger.stores import open_store

    layout = Layout.parse("token")
    local = LocalSimulationService(tmp_path, layout, EntrypointResolver(str(EXAMPLE_MODEL)))
    outputs = ("incidence", "prevalence")
    good = SimTask(BUNDLE, "models.sir/baseline", UniqueParameterSet.from_params({"beta": 0.3, "gamma": 0.1}),
                   7, outputs)
    bad = SimTask(BUNDLE, "models.sir:simulate", UniqueParameterSet.from_params({"beta": 9.0, "gamma": 0.1}),
                  7, outputs)
    first = local.submit(good).result()
    failed = local.submit(bad).result()
    assert isinstance(first, SimReturn) and first.error is None and not first.cached
    assert failed.error.error_type == "ValueError" and "R0 diverged" in failed.error.message
    assert failed.task_id == sim_return_task_id(bad.param_id, 7, [], error=True) and failed.outputs == {}

    service = IdempotentSimulationService(local, open_store(str(tmp_path)), layout=layout)
    directory = tmp_path / layout.sim_path(BUNDLE, good.param_id, 7)
    before = (directory / "result.json").stat().st_mtime_ns
    stored = service.submit(good).result()
    assert (directory / "result.json").stat().st_mtime_ns == before  # not run again
    assert stored == replace(first, cached=True)
    # Built from the stored files: result.json's task id, each artifact's bytes, size and checksum.
    result = json.loads((directory / "result.json").read_text())
    assert stored.task_id == result["task_id"] == sim_return_task_id(good.param_id, 7, outputs)
    for name in ("incidence", "prevalence"):
        data = (directory / f"artifact_{name}.arrow").read_bytes()
        assert stored.outputs[name] == TableArtifact(size=len(data), inline=data,
                                                     checksum=result["outputs"][name]["checksum"])
    assert service.submit(bad).result().error.error_type == "ValueError"  # errored: run again
    other = SimTask(good.bundle_ref, good.entrypoint, good.params, 8, good.outputs)
    assert set(service.gather(service.submit_batch([other]))[0].outputs) == {"incidence", "prevalence"}
    assert (service.reused, service.delegated) == (1, 2)


def test_prune_keeps_only_unfinished_tasks(tmp_path):
    from jobledger.stores.local import write_result_dir

    spec_doc = {"model": "models.sir", "scenario": "baseline", "n_replicates": 3, "outputs": ["incidence"],
                "parameter_sets": [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.4, "gamma": 0.1}]}
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(spec_doc))
    job = load_spec(spec_doc, bundle_ref=BUNDLE)
    layout = Layout.parse("token")
    rows = [r for r in expected_outputs(job, layout, "runner")]
    # Param set A: all three done. Param set B: only its middle seed done, one errored.
    done = rows[:3] + [rows[4]]
    for row in done:
        write_result_dir(tmp_path / "store" / row.path, bundle_ref=BUNDLE, entrypoint=row.entrypoint, params={},
                         param_id=row.param_id, seed=row.run_seed, outputs={"incidence": b"1"})
    write_result_dir(tmp_path / "store" / rows[5].path, bundle_ref=BUNDLE, entrypoint=rows[5].entrypoint, params={},
                     param_id=rows[5].param_id, seed=rows[5].run_seed, outputs={}, error={"message": "boom"})

    out = tmp_path / "pruned.json"
    result = cli("prune", spec, "--store", tmp_path / "store", "--bundle", BUNDLE, "-o", out)
    assert result.stderr.strip() == "kept 3 task(s), dropped 3 (outputs verified), over-compute 1"
    pruned = load_spec(json.loads(out.read_text()))
    # The runner cannot skip a seed inside a group: B's span s..s+2 is rerun, s+1 is the over-compute.
    assert [r.path for r in expected_outputs(pruned, layout, "runner")] == [r.path for r in rows[3:]]
    assert [t.seed for t in pruned.tasks] == runner_seeds(pruned.tasks)

    task_policy = json.loads(cli("prune", spec, "--store", tmp_path / "store", "--bundle", BUNDLE,
                                 "--seed-policy", "task").stdout)
    kept = load_spec(task_policy)
    assert {r.path for r in expected_outputs(kept, layout, "task")} == \
           {r.path for r in expected_outputs(job, layout, "task")} - verified_task_paths(job, layout, tmp_path / "store")


def verified_task_paths(job, layout, store: Path) -> set[str]:
    return {r.path for r in expected_outputs(job, layout, "task")
            if (store / r.path / "result.json").exists() and not (store / r.path / "error_details.arrow").exists()}


def test_local_submit_with_a_remote_store_is_refused_before_anything_is_recorded(db_path, tmp_path):
    spec = study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}])
    result = cli("submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", "az://results/x", ok=False)
    assert result.exit_code == 1
    assert result.stderr == ("error: the local runtime writes to a local store; az://results/x is not a directory "
                             "(pass --store DIR)\n")
    assert json.loads(cli("list", "--json").stdout) == []
