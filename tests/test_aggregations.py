"""Aggregations (jobs with targets): the local runtime runs targets and writes them as ModelOps does."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from helpers import cli
from test_local_runtime import BUNDLE, EXAMPLE_MODEL, submit_local, wait_for_exit

from jobledger.contracts import aggregation_id, load_spec, sim_return_task_id
from jobledger.layout import Layout
from jobledger.ledger import Ledger
from jobledger.manifest import runner_seeds
from jobledger.stores.local import write_aggregation_dir, write_result_dir

TARGET = "targets.prev/loss"


def target_study(path: Path, parameter_sets, n_replicates=3, targets=(TARGET,)) -> Path:
    path.write_text(json.dumps({"model": "models.sir", "scenario": "baseline",
                                "parameter_sets": parameter_sets, "n_replicates": n_replicates,
                                "outputs": ["incidence", "prevalence"], "targets": list(targets)}))
    return path


def test_local_runtime_runs_targets_and_writes_aggregations_as_the_modelops_runner(db_path, tmp_path):
    store = tmp_path / "store"
    spec = target_study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 5.0, "gamma": 0.1}])
    job_id = submit_local(spec, store)
    record = wait_for_exit(db_path, job_id)
    assert (record["ran"], record["errored"], record["aggregated"]) == (6, 3, 2)

    job = load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE)
    layout = Layout.parse("token")
    import importlib
    import sys
    sys.path.insert(0, str(EXAMPLE_MODEL))
    sir, prev = importlib.import_module("models.sir"), importlib.import_module("targets.prev")
    by_param: dict[str, list[tuple[int, dict]]] = {}
    for task, seed in zip(job.tasks, runner_seeds(job.tasks), strict=True):
        by_param.setdefault(task.param_id, []).append((seed, task.params.params))
    for param_id, replicates in by_param.items():
        failing = replicates[0][1]["beta"] == 5.0  # R0 = 50 diverges: every replicate errors
        ids = [sim_return_task_id(param_id, seed, ["incidence", "prevalence"], error=failing)
               for seed, _ in replicates]
        directory = store / layout.agg_path(BUNDLE, TARGET, aggregation_id(TARGET, ids))
        assert sorted(p.name for p in directory.iterdir()) == ["metadata.json", "result.json"]
        result = json.loads((directory / "result.json").read_text())
        assert list(result) == ["aggregation_id", "loss", "diagnostics", "n_replicates", "outputs", "inputs"]
        assert result["aggregation_id"] == directory.name.removeprefix("agg_")
        assert result["inputs"] == [{"type": "sim", "task_id": i} for i in ids]  # in the order they ran
        assert (result["n_replicates"], result["outputs"]) == (3, {})
        metadata = json.loads((directory / "metadata.json").read_text())
        assert list(metadata) == ["bundle_ref", "target_entrypoint", "n_sim_returns", "param_id", "timestamp"]
        # ModelOps's quirk: metadata's 'param_id' is the first input's task id prefix.
        assert (metadata["bundle_ref"], metadata["target_entrypoint"], metadata["n_sim_returns"],
                metadata["param_id"]) == (BUNDLE, TARGET, 3, ids[0][:16])
        if failing:
            assert result["diagnostics"] == {"n_ok": 0, "n": 3, "reason": "no replicate succeeded"}
            assert result["loss"] is None
            continue
        peaks = [max(json.loads(sir.baseline(params, seed)["prevalence"])) for seed, params in replicates]
        mean_peak = sum(peaks) / 3
        assert result["diagnostics"] == {"n_ok": 3, "n": 3, "mean_peak": mean_peak}
        assert result["loss"] == ((mean_peak - prev.OBSERVED_PEAK) / prev.OBSERVED_PEAK) ** 2


def test_a_target_that_raises_gets_an_error_aggregation_and_the_worker_carries_on(db_path, tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "toy").mkdir(parents=True)
    (bundle / "toy" / "model.py").write_text("def run(params, seed):\n    return {'y': str(seed).encode()}\n")
    (bundle / "toy" / "score.py").write_text("def bad(sim_returns):\n    raise KeyError('no data')\n\n"
                                             "def good(sim_returns):\n    return len(sim_returns) / 10\n")
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"model": "toy.model", "scenario": "run", "parameter_sets": [{"x": 1}],
                                "n_replicates": 2, "outputs": ["y"],
                                "targets": ["toy.score/bad", "toy.score:good"]}))
    job_id = submit_local(spec, tmp_path / "store", bundle)
    record = wait_for_exit(db_path, job_id)
    assert (record["returncode"], record["aggregated"]) == (0, 2)
    results = {json.loads((d / "metadata.json").read_text())["target_entrypoint"]: json.loads(
        (d / "result.json").read_text()) for d in (tmp_path / "store").glob("token/v1/aggs/*/*/agg_*")}
    assert results["toy.score/bad"]["error"] == {"error_type": "KeyError", "message": "'no data'",
                                                 "retryable": False}
    assert results["toy.score/bad"]["loss"] is None
    assert "error" not in results["toy.score:good"] and results["toy.score:good"]["loss"] == 0.2


# ---------------------------------------------------------------- result trees as ModelOps writes them

def write_worker_tree(store: Path, job, *, returned=(), failed=frozenset()) -> dict[str, list[str]]:
    """Write what the ModelOps runner writes for ``job``: each task's result at its runner seed (the
    declared outputs plus the ``returned`` extras; an error result for the task indexes in ``failed``),
    then per param set one aggregation per target over the task ids its replicates returned, errors
    included. Returns the aggregated task ids per param_id."""
    layout = Layout.parse("token")
    ids: dict[str, list[str]] = {}
    n_ok: dict[str, int] = {}
    for index, (task, seed) in enumerate(zip(job.tasks, runner_seeds(job.tasks), strict=True)):
        names = sorted(set(task.outputs or ()) | set(returned))
        error = {"error_type": "ValueError", "message": "R0 diverged"} if index in failed else None
        series = json.dumps([seed % 97, 1]).encode()  # what the example target reads: a JSON list
        write_result_dir(store / layout.sim_path(job.bundle_ref, task.param_id, seed),
                         bundle_ref=job.bundle_ref, entrypoint=task.entrypoint, params=task.params.params,
                         param_id=task.param_id, seed=seed,
                         outputs={} if error else dict.fromkeys(names, series), error=error)
        task_id = sim_return_task_id(task.param_id, seed, names, error=bool(error))
        ids.setdefault(task.param_id, []).append(task_id)
        n_ok[task.param_id] = n_ok.get(task.param_id, 0) + (error is None)
    for param_id, task_ids in ids.items():
        for target in job.target_entrypoints:
            directory = layout.agg_path(job.bundle_ref, target, aggregation_id(target, task_ids))
            write_aggregation_dir(store / directory, bundle_ref=job.bundle_ref, target_entrypoint=target,
                                  sim_task_ids=task_ids, loss=0.25, n_ok=n_ok[param_id])
    return ids


def register_finished(spec: Path, store: Path, *extra) -> str:
    """Register a job ModelOps ran (elsewhere) and move it to validating, as sync does when it ends."""
    job_id = json.loads(cli("register", spec, "--store", store, *extra, "--json").stdout)["job_id"]
    with Ledger(os.environ["JOBLEDGER_DB"]) as ledger:
        ledger.transition(job_id, "validating", "test: the runner finished")
    return job_id


def validate_json(job_id: str, *args, ok=(0, 3, 4)) -> dict:
    return json.loads(cli("validate", job_id, "--json", *args, ok=ok).stdout)


def test_the_upstream_worker_tree_is_verified_whole_with_nothing_unexpected(db_path, spec_dir, tmp_path):
    """A job the real ModelOps stack ran (job runner → Dask → worker plugin → bundle), with a target."""
    tree = spec_dir / "upstream" / "worker-job-c400000a"
    job_id = register_finished(tree / "job-c400000a.json", tree / "provenance")
    result = validate_json(job_id, ok=(0,))
    assert (result["status"], result["expected"], result["verified"], result["unexpected"]) == \
           ("succeeded", 8, 8, 0)
    for args in (["--deep", "--strategy", "list"], ["--deep", "--checksums", "--strategy", "list"],
                 ["--strategy", "head"]):
        again = validate_json(job_id, "--force", *args, ok=(0,))
        assert (again["status"], again["verified"], again["expected"]) == ("succeeded", 8, 8), args
        assert again["unexpected"] == (None if "head" in args else 0)
    rows = json.loads(cli("sql", "SELECT kind, path, state, detail FROM outputs WHERE kind = 'aggregation' "
                                 "ORDER BY detail", "--json").stdout)
    target_dir = "token/v1/aggs/427500fa4203/target_targets.prev_loss"
    assert rows == [{"kind": "aggregation", "path": target_dir, "state": "verified", "detail": f"agg_{aid}"}
                    for aid in ("8b8b55bd197ab611", "aee4a39df1e58314")]


def test_the_upstream_worker_tree_on_azurite_reads_only_the_aggregations(db_path, spec_dir, azure_conn):
    """The same tree in a blob container: one listing page per prefix, and of all the result files
    only the two aggregations' result.json are read (--deep reads the rest)."""
    import uuid

    from jobledger.stores import open_store
    url = f"az://prov-{uuid.uuid4().hex[:12]}/mc"
    open_store(url).upload_tree(spec_dir / "upstream" / "worker-job-c400000a" / "provenance")
    job_id = register_finished(spec_dir / "upstream" / "worker-job-c400000a" / "job-c400000a.json", url)
    result = validate_json(job_id, "--strategy", "list", ok=(0,))
    assert (result["status"], result["verified"], result["expected"], result["stale"],
            result["unexpected"]) == ("succeeded", 8, 8, 0, 0)
    assert result["requests"] == len(result["prefixes"]) + 2  # a page per prefix, two result.json reads
    deep = validate_json(job_id, "--force", "--deep", "--checksums", "--strategy", "list", ok=(0,))
    assert (deep["verified"], deep["unexpected"]) == (8, 0)


def test_a_bundle_returning_more_than_it_declares_is_verified_under_the_ids_it_returned(db_path, tmp_path):
    spec = target_study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.5, "gamma": 0.1}])
    job = load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE)
    store = tmp_path / "store"
    ids = write_worker_tree(store, job, returned=["metadata"])  # ModelOps's own example bundle does this
    job_id = register_finished(spec, store, "--bundle", BUNDLE)
    result = validate_json(job_id, ok=(0,))
    assert (result["status"], result["verified"], result["expected"], result["unexpected"]) == \
           ("succeeded", 8, 8, 0)
    agg = json.loads(cli("sql", "SELECT p.param_id, o.task_id, o.detail FROM outputs o JOIN params p "
                                "USING (param_key) WHERE kind = 'aggregation'", "--json").stdout)
    for row in agg:
        real = aggregation_id(TARGET, ids[row["param_id"]])
        assert row["detail"] == f"agg_{real}"
        assert row["task_id"] != real  # the id the declared outputs predict is not the real one
    assert validate_json(job_id, "--force", "--deep", "--checksums", ok=(0,))["verified"] == 8


def stale_tree(tmp_path: Path) -> tuple[Path, Path, object, dict]:
    """Param set A clean; param set B with two failed replicates and the aggregation the runner
    wrote over them (n_ok 1 of 3)."""
    spec = target_study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.4, "gamma": 0.1}])
    job = load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE)
    store = tmp_path / "store"
    ids = write_worker_tree(store, job, failed={4, 5})
    return spec, store, job, ids


def test_failed_replicates_and_their_stale_aggregation_next_to_a_clean_param_set(db_path, tmp_path):
    spec, store, job, ids = stale_tree(tmp_path)
    job_id = register_finished(spec, store, "--bundle", BUNDLE)
    result = validate_json(job_id, ok=(3,))
    assert (result["status"], result["expected"], result["verified"], result["errored"], result["missing"],
            result["stale"], result["unexpected"]) == ("partial", 8, 5, 2, 0, 1, 0)
    b = job.tasks[3].param_id
    stale_dir = f"agg_{aggregation_id(TARGET, ids[b])}"
    missing = json.loads(cli("sql", f"SELECT reason, detail, param_id FROM unverified_outputs "
                                    f"WHERE job_id = '{job_id}'", "--json").stdout)
    assert sorted((m["reason"], m["detail"]) for m in missing) == [
        ("errored", "the worker wrote error_details.arrow"),
        ("errored", "the worker wrote error_details.arrow"),
        ("stale", f"aggregates 1 of 3 ok replicates ({stale_dir})")]
    assert {m["param_id"] for m in missing} == {b}
    status = json.loads(cli("status", job_id, "--json").stdout)
    assert (status["verified"], status["stale"]) == (5, 1)
    # A param set is complete only with its aggregation: B is 1 of 4 (1 ok replicate, its aggregation stale)
    a = job.tasks[0].param_id
    assert [(s["param_id"], s["verified"], s["expected"]) for s in status["param_sets"]] == [(a, 4, 4), (b, 1, 4)]


def test_two_jobs_in_one_store_each_see_only_strays_as_unexpected(db_path, tmp_path):
    store = tmp_path / "store"
    spec_a = target_study(tmp_path / "a.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.5, "gamma": 0.1}])
    spec_b = target_study(tmp_path / "b.json", [{"beta": 0.7, "gamma": 0.1}])
    for spec in (spec_a, spec_b):
        write_worker_tree(store, load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE))
    a = register_finished(spec_a, store, "--bundle", BUNDLE)
    b = register_finished(spec_b, store, "--bundle", BUNDLE)
    # Nobody's: a seed directory beside B's and an aggregation over task ids no job knows.
    job_b = load_spec(json.loads(spec_b.read_text()), bundle_ref=BUNDLE)
    layout = Layout.parse("token")
    stray_sim = layout.sim_path(BUNDLE, job_b.tasks[0].param_id, 1)
    write_result_dir(store / stray_sim, bundle_ref=BUNDLE, entrypoint="models.sir/baseline", params={},
                     param_id=job_b.tasks[0].param_id, seed=1, outputs={"incidence": b"1"})
    stray_agg = layout.agg_path(BUNDLE, TARGET, "0123456789abcdef")
    write_aggregation_dir(store / stray_agg, bundle_ref=BUNDLE, target_entrypoint=TARGET,
                          sim_task_ids=["f" * 64], loss=1.0)
    for job_id, expected in ((a, 8), (b, 4)):
        result = validate_json(job_id, ok=(0,))
        assert (result["status"], result["verified"], result["expected"], result["unexpected"]) == \
               ("succeeded", expected, expected, 2)
        paths = json.loads(cli("sql", f"SELECT path FROM unexpected_paths WHERE job_id = '{job_id}' "
                                      f"ORDER BY path", "--json").stdout)
        assert [p["path"] for p in paths] == [stray_agg, stray_sim]


def test_resume_reruns_the_stale_param_set_whole_with_targets_and_the_root_ends_succeeded(db_path, tmp_path):
    spec, store, job, ids = stale_tree(tmp_path)
    job_id = register_finished(spec, store, "--bundle", BUNDLE)
    validate_json(job_id, ok=(3,))
    b = job.tasks[3].param_id
    b_seeds = runner_seeds(job.tasks)[3:]

    # Registered elsewhere: the ModelOps runner would recompute B's verified replicate, the local
    # runtime reuses it.
    for runtime, overcompute in ((None, 1), ("k8s", 1), ("local", 0)):
        args = ["--runtime", runtime] if runtime else []
        plan = json.loads(cli("resume", job_id, "--dry-run", "--json", *args).stdout)
        # 2 replicates and 1 aggregation to produce; B's verified replicate re-run
        assert (plan["outputs"], plan["overcompute"]) == (3, overcompute), runtime
        (child,) = plan["jobs"]
        assert child["target_spec"] == job.to_json()["target_spec"]  # the job's, as to_simjob wrote it
        assert [(t["params"]["param_id"], t["seed"]) for t in child["tasks"]] == [(b, s) for s in b_seeds]
        assert runner_seeds(load_spec(child).tasks) == b_seeds  # what the runner will run

    out = cli("resume", job_id, "--runtime", "local", "--bundle-path", EXAMPLE_MODEL)
    assert f"{job_id}: resuming 3 output(s) in 1 job(s), over-compute 0" in out.stdout
    child = f"{job_id}-r1"
    record = wait_for_exit(db_path, child)
    assert (record["ran"], record["reused"], record["aggregated"]) == (2, 1, 1)
    assert cli("sync").stdout.strip() == f"{child}: scheduled → validating → succeeded (4 verified)"

    final = validate_json(job_id, "--force", ok=(0,))
    assert (final["status"], final["verified"], final["expected"], final["unexpected"]) == \
           ("succeeded", 8, 8, 0)
    assert (store / Layout.parse("token").agg_path(BUNDLE, TARGET, aggregation_id(TARGET, ids[b]))).is_dir()
    detail = json.loads(cli("sql", f"SELECT detail FROM outputs o JOIN params p USING (param_key) WHERE "
                                   f"job_id = '{job_id}' AND kind = 'aggregation' AND param_id = '{b}'",
                            "--json").stdout)[0]["detail"]
    assert detail.startswith("agg_") and detail != f"agg_{aggregation_id(TARGET, ids[b])}"  # the new one
    assert json.loads(cli("status", job_id, "--json").stdout)["status"] == "succeeded"


def test_prune_keeps_a_param_set_with_targets_whole(db_path, tmp_path):
    """A pruned spec with targets is run by the runner, which aggregates what it runs: a param set with a
    missing replicate is kept whole (its verified replicates are over-compute), a finished one dropped."""
    spec = target_study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.4, "gamma": 0.1}])
    job = load_spec(json.loads(spec.read_text()), bundle_ref=BUNDLE)
    store = tmp_path / "store"
    write_worker_tree(store, job)
    seeds = runner_seeds(job.tasks)
    shutil.rmtree(store / Layout.parse("token").sim_path(BUNDLE, job.tasks[4].param_id, seeds[4]))
    out = tmp_path / "pruned.json"
    result = cli("prune", spec, "--store", store, "--bundle", BUNDLE, "-o", out)
    assert result.stderr.strip() == "kept 3 task(s), dropped 3 (outputs verified), over-compute 2"
    pruned = json.loads(out.read_text())
    assert pruned["target_spec"] == job.to_json()["target_spec"]
    assert [(t["params"]["param_id"], t["seed"]) for t in pruned["tasks"]] == \
           [(job.tasks[3].param_id, s) for s in seeds[3:]]


def test_a_param_set_whose_replicates_always_fail_is_given_up_whole_after_max_attempts(db_path, tmp_path):
    """Its aggregation needs every replicate verified, so re-running the param set whole for ever would
    never finish it: after --max-attempts jobs with the replicates errored, resume gives up the set."""
    store = tmp_path / "store"
    # beta 5.0 diverges (R0 = 50): the example model raises for every replicate of that param set
    spec = target_study(tmp_path / "study.json", [{"beta": 0.3, "gamma": 0.1}, {"beta": 5.0, "gamma": 0.1}],
                        n_replicates=2)
    root = submit_local(spec, store)
    wait_for_exit(db_path, root)
    cli("sync")
    for generation in (1, 2):
        plan = json.loads(cli("resume", root, "--dry-run", "--json").stdout)
        assert (plan["outputs"], plan["given_up"]) == (3, 0)  # the set's 2 replicates and its aggregation
        cli("resume", root, "--runtime", "local", "--bundle-path", EXAMPLE_MODEL)
        wait_for_exit(db_path, f"{root}-r{generation}")
        cli("sync")
    # Errored in the root, r1 and r2: the third attempt was the last.
    refused = cli("resume", root, ok=(1,))
    assert "nothing to resume: 2 outputs given up after 3 attempts" in refused.stderr
    plan = json.loads(cli("resume", root, "--dry-run", "--json").stdout)
    assert (plan["outputs"], plan["given_up"], plan["jobs"]) == (0, 2, [])
    assert any(note.startswith("1 aggregation(s) not redone: 1 param set(s) hold a replicate given up after 3")
               for note in plan["notes"])
    assert json.loads(cli("status", root, "--json").stdout)["given_up"] == 2
    # A higher limit runs the set whole again, with its aggregation.
    plan = json.loads(cli("resume", root, "--max-attempts", "4", "--dry-run", "--json").stdout)
    assert (plan["outputs"], plan["given_up"]) == (3, 0) and plan["jobs"][0]["target_spec"]
