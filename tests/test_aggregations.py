"""Aggregations (jobs with targets): the local runtime runs targets and writes them as ModelOps does."""
from __future__ import annotations

import json
from pathlib import Path

from test_local_runtime import BUNDLE, EXAMPLE_MODEL, submit_local, wait_for_exit

from jobledger.contracts import aggregation_id, load_spec, sim_return_task_id
from jobledger.layout import Layout
from jobledger.manifest import runner_seeds

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
