"""The local runtime's detached worker: runs a job's tasks and writes ModelOps worker results.

Run as ``python -m jobledger.runtimes.worker RUN_DIR``. RUN_DIR/plan.json (written by
LocalRuntime.submit) names the store, the bundle directory, the layout and every task with
the seed it must run. Results are written by ``stores.local.write_result_dir`` in the
ModelOps worker's order, each file by temp file + rename: metadata.json,
``artifact_<name>.arrow`` per output (the bytes the model returned), on error
error_details.arrow, and result.json LAST. The exit record RUN_DIR/exit.json is written
when the worker ends; a worker killed with SIGKILL leaves none.

Entrypoints are resolved from the bundle directory (put first on sys.path):
``module.path:function`` calls that function; ``import.path/scenario`` imports
``import.path`` (a module, or a module attribute such as a class) and calls its attribute
named like the scenario with '-' and '.' replaced by '_', or else ``SCENARIOS[scenario]``.
The callable gets ``(params: dict, seed: int)`` and returns {output name: bytes}.

Targets (the job's ``target_spec.data.target_entrypoints``) are resolved the same way. Once
all replicates of a param set have a result, each target is called with their SimReturns
(in run order, errored ones included, as the ModelOps runner aggregates them) and returns a
loss (a number, or ``{"loss": ..., "diagnostics": {...}}``); the aggregation directory is
written as the runner writes it (``stores.local.write_aggregation_dir``) under
``agg_<aggregation id over the replicates' SimReturn task ids>``.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..contracts import SimTask, UniqueParameterSet, aggregation_id
from ..fileio import write_atomic
from ..idempotent import IdempotentSimulationService
from ..layout import Layout
from ..simreturn import sim_return_from_store
from ..stores import open_store
from ..stores.local import LocalStore, write_aggregation_dir, write_result_dir

PLAN_FILE = "plan.json"
EXIT_FILE = "exit.json"
PID_FILE = "pid"
LOG_FILE = "worker.log"


class EntrypointResolver:
    def __init__(self, bundle_path: str | None):
        if bundle_path:
            sys.path.insert(0, str(Path(bundle_path).resolve()))
        self._cache: dict[str, Callable] = {}

    def __call__(self, entrypoint: str) -> Callable:
        if entrypoint not in self._cache:
            self._cache[entrypoint] = self._resolve(entrypoint)
        return self._cache[entrypoint]

    @staticmethod
    def _resolve(entrypoint: str) -> Callable:
        if ":" in entrypoint:
            module_name, _, attr_path = entrypoint.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attr_path.split("."):
                target = getattr(target, part)
            return target
        dotted, _, scenario = entrypoint.rpartition("/")
        target = _import_object(dotted)
        name = scenario.replace("-", "_").replace(".", "_")
        if hasattr(target, name):
            return getattr(target, name)
        scenarios = getattr(target, "SCENARIOS", None)
        if isinstance(scenarios, Mapping) and scenario in scenarios:
            return scenarios[scenario]
        raise AttributeError(f"{dotted} has no scenario {scenario!r} (no attribute {name!r}, "
                             f"no SCENARIOS[{scenario!r}])")


def _import_object(dotted: str) -> Any:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name and not ".".join(parts[:cut]).startswith(exc.name):
                raise  # a missing dependency inside the model, not a shorter module path
            continue
        for attr in parts[cut:]:
            target = getattr(target, attr)
        return target
    raise ModuleNotFoundError(f"no module named {parts[0]!r}")


class LocalSimulationService:
    """Runs one task at a time in this process and writes its result directory."""

    def __init__(self, store_root: Path, layout: Layout, resolve: Callable[[str], Callable]):
        self.store_root = store_root
        self.store = LocalStore(store_root)
        self.layout = layout
        self.resolve = resolve
        self.errored = 0

    def submit(self, task: SimTask) -> Future:
        future: Future = Future()
        future.set_result(self.run(task))
        return future

    def run(self, task: SimTask):
        """Run the task, write its result directory and return its SimReturn."""
        pid, seed = task.params.param_id, task.seed
        path = self.layout.sim_path(task.bundle_ref, pid, seed)
        directory = self.store_root / path
        error = None
        try:
            artifacts = self._call(task)
        except Exception as exc:  # the model's failure is the task's result, not the worker's
            self.errored += 1
            artifacts = {}
            error = {"error_type": type(exc).__name__, "message": str(exc), "retryable": False,
                     "traceback": traceback.format_exc()}
        write_result_dir(directory, bundle_ref=task.bundle_ref, entrypoint=task.entrypoint,
                         params=task.params.params, param_id=pid, seed=seed, outputs=artifacts, error=error,
                         timestamp=_now())
        return sim_return_from_store(self.store, path)

    def _call(self, task: SimTask) -> dict[str, bytes]:
        produced = self.resolve(task.entrypoint)(dict(task.params.params), task.seed)
        if not isinstance(produced, Mapping):
            raise TypeError(f"{task.entrypoint} returned {type(produced).__name__}, "
                            "not a mapping of name → bytes")
        for name, data in produced.items():
            if not isinstance(name, str) or not name or not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"{task.entrypoint} returned output {name!r} of type {type(data).__name__}; "
                                f"outputs must be bytes")
        if task.outputs is None:
            return {k: bytes(v) for k, v in produced.items()}
        absent = sorted(set(task.outputs) - set(produced))
        if absent:
            raise ValueError(f"{task.entrypoint} did not return the declared outputs {absent}")
        return {k: bytes(produced[k]) for k in task.outputs}


def tasks_of(plan: dict) -> list[SimTask]:
    return [SimTask(t["bundle_ref"], t["entrypoint"], UniqueParameterSet(t["param_id"], t["params"]),
                    int(t["seed"]), tuple(t["outputs"]) if t["outputs"] is not None else None)
            for t in plan["tasks"]]


def aggregate(service: LocalSimulationService, bundle_ref: str, target: str, sim_returns: list) -> str:
    """Call ``target`` with one param set's SimReturns and write the aggregation as ModelOps does;
    returns its path. A target that raises gets an error result, like a model that raises."""
    task_ids = [r.task_id for r in sim_returns]
    path = service.layout.agg_path(bundle_ref, target, aggregation_id(target, task_ids))
    n_ok = sum(1 for r in sim_returns if r.error is None)
    loss, diagnostics, error = None, {}, None
    try:
        value = service.resolve(target)(list(sim_returns))
        if isinstance(value, Mapping):
            loss, diagnostics = value.get("loss"), dict(value.get("diagnostics") or {})
        else:
            loss = value
        if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
            raise TypeError(f"{target} returned loss {loss!r}; a number or None is needed")
    except Exception as exc:  # the target's failure is the aggregation's result, not the worker's
        error = {"error_type": type(exc).__name__, "message": str(exc), "retryable": False,
                 "traceback": traceback.format_exc()}
        loss, diagnostics = None, {}
    write_aggregation_dir(service.store_root / path, bundle_ref=bundle_ref, target_entrypoint=target,
                          sim_task_ids=task_ids, loss=loss, diagnostics=diagnostics, n_ok=n_ok, error=error,
                          timestamp=_now())
    return path


def run(run_dir: Path) -> dict:
    plan = json.loads((run_dir / PLAN_FILE).read_text())
    layout = Layout.parse(plan["layout"])
    local = LocalSimulationService(Path(plan["store_root"]), layout,
                                   EntrypointResolver(plan.get("bundle_path")))
    service = IdempotentSimulationService(local, open_store(plan["store_url"]), layout=layout)
    tasks = tasks_of(plan)
    targets = plan.get("targets") or []
    left = Counter(task.params.param_id for task in tasks)
    returned: dict[str, list] = {}
    aggregated = 0
    for task in tasks:
        pid = task.params.param_id
        sim_return = service.submit(task).result()
        print(f"{pid[:8]} seed {task.seed}: done", flush=True)
        if not targets:
            continue
        returned.setdefault(pid, []).append(sim_return)
        left[pid] -= 1
        if left[pid] == 0:  # the param set's last replicate: aggregate it, as the runner does
            replicates = returned.pop(pid)
            for target in targets:
                path = aggregate(local, plan["bundle_ref"], target, replicates)
                aggregated += 1
                print(f"{pid[:8]} {target}: {path}", flush=True)
    return {"tasks": len(tasks), "reused": service.reused, "ran": service.delegated, "errored": local.errored,
            "aggregated": aggregated}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    record: dict[str, Any] = {"pid": os.getpid()}
    try:
        record.update(run(run_dir))
        record["returncode"] = 0
    except BaseException as exc:  # record why the worker itself failed, then fail
        record.update(returncode=1, error_type=type(exc).__name__, message=str(exc) or type(exc).__name__)
        traceback.print_exc()
    record["finished_at"] = _dt.datetime.now(_dt.UTC).isoformat()
    write_atomic(run_dir / EXIT_FILE, json.dumps(record, indent=2).encode())
    return record["returncode"]


if __name__ == "__main__":
    sys.exit(main())
