"""Skip finished work: a simulation service wrapper and spec pruning, both driven by the store.

An output is finished when its result directory holds ``result.json`` without an error
(the worker writes it last); an errored result also lists ``error_details.arrow``, which
lets a listing decide without reading every result.json.
"""
from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Iterable

from .contracts import SimTask, load_spec
from .layout import ERROR_FILE, RESULT_FILE, Layout
from .manifest import check_seed_policy, expected_outputs
from .resume import PendingTask, plan_task_groups
from .simreturn import sim_return_from_store
from .stores import StoreNotFound


def _open(store):
    if isinstance(store, str):
        from .stores import open_store
        return open_store(store)
    return store


def _layout(layout) -> Layout:
    return layout if isinstance(layout, Layout) else Layout.parse(layout)


class IdempotentSimulationService:
    """Wraps a SimulationService: ``submit(task)`` returns a completed future holding a SimReturn
    built from the stored result (``cached=True``) when the task's output is verified, else delegates.

    Tasks are looked up at ``layout.sim_path(bundle_ref, param_id, task.seed)``: submit tasks
    with the seed they will run with (the runner seed under the ``runner`` policy).
    """

    def __init__(self, sim_service, store, *, layout: str | Layout = "token"):
        self.sim_service = sim_service
        self.store = _open(store)
        self.layout = _layout(layout)
        self.reused = 0
        self.delegated = 0

    def path_of(self, task: SimTask) -> str:
        return self.layout.sim_path(task.bundle_ref, task.params.param_id, task.seed)

    def stored_result(self, task: SimTask):
        """The SimReturn of the task's output when it is there without an error, else None."""
        directory = self.path_of(task)
        name = f"{directory}/{RESULT_FILE}"
        if self.store.head(name) is None:
            return None
        try:
            doc = json.loads(self.store.read(name))
        except ValueError:
            return None  # unreadable: treat as not finished, the task runs again
        if not isinstance(doc, dict) or "error" in doc or "task_id" not in doc:
            return None
        try:
            return sim_return_from_store(self.store, directory, result=doc, cached=True)
        except StoreNotFound:
            return None  # an artifact result.json names is gone: run the task again

    def submit(self, task: SimTask) -> Future:
        stored = self.stored_result(task)
        if stored is None:
            self.delegated += 1
            return self.sim_service.submit(task)
        self.reused += 1
        future: Future = Future()
        future.set_result(stored)
        return future

    def submit_batch(self, tasks: Iterable[SimTask]) -> list[Future]:
        return [self.submit(task) for task in tasks]

    def gather(self, futures: Iterable[Future]) -> list[Any]:
        return [f.result() for f in futures]

    def __getattr__(self, name: str):
        return getattr(self.sim_service, name)


def verified_paths(store, paths: Iterable[str]) -> set[str]:
    """Which result directories are finished, from one listing per param-set directory."""
    store = _open(store)
    wanted = set(paths)
    parents = sorted({p.rsplit("/", 1)[0] + "/" for p in wanted})
    files: dict[str, set[str]] = {}
    for prefix in parents:
        for name in store.list_names(prefix):
            directory, _, base = name.rpartition("/")
            if directory in wanted:
                files.setdefault(directory, set()).add(base)
    return {d for d, names in files.items() if RESULT_FILE in names and ERROR_FILE not in names}


@dataclass
class Pruned:
    spec: dict
    kept: int          # tasks in the pruned spec
    dropped: int       # tasks removed
    overcompute: int   # kept tasks whose outputs are already verified (runner policy spans)


def prune_spec(spec_doc: Any, store, *, bundle: str | None = None, layout: str | Layout = "token",
               seed_policy: str = "runner") -> Pruned:
    """The SimJob spec without the tasks whose outputs are already verified in ``store``.

    Under the ``runner`` policy the kept tasks of a param set are rewritten as one run of
    runner seeds spanning its unfinished outputs (the runner cannot skip seeds inside a
    group); verified seeds inside such a span are counted as over-compute.
    """
    job = load_spec(spec_doc, bundle_ref=bundle)
    policy = check_seed_policy(seed_policy)
    layout_obj = _layout(layout)
    rows = [r for r in expected_outputs(job, layout_obj, policy) if r.kind == "simulation"]
    done = verified_paths(store, [r.path for r in rows])
    params = {t.params.param_id: t.params.params for t in job.tasks}
    pending = [PendingTask(r.param_id, params[r.param_id], r.bundle_ref, r.entrypoint, r.outputs, r.task_seed,
                           r.run_seed) for r in rows if r.path not in done]
    if policy == "task":
        keep = {(p.param_id, p.task_seed, p.entrypoint, p.outputs) for p in pending}
        tasks = [t for t in job.tasks if (t.param_id, t.seed, t.entrypoint, t.outputs) in keep]
        overcompute = 0
    else:
        groups, overcompute = plan_task_groups(pending, policy, single_job=True)
        tasks = groups[0] if groups else []
    pruned = job.to_json()
    pruned["tasks"] = [t.to_json() for t in tasks]
    return Pruned(pruned, len(tasks), len(job.tasks) - len(tasks), overcompute)


__all__ = ["IdempotentSimulationService", "verified_paths", "prune_spec", "Pruned"]
