"""Skip finished work: a simulation service wrapper that returns stored results.

Whether an output is finished is ``layout.output_state`` of the names in its result
directory (the same rule validation applies in SQL).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from .contracts import SimTask
from .layout import RESULT_FILE, VERIFIED, Layout, output_state
from .paths import UnsafePath
from .simreturn import sim_return_from_store
from .stores import MAX_RESULT_BYTES, StoreNotFound, UnreadableFile, open_store


def _open(store):
    return open_store(store) if isinstance(store, str) else store


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
        """The SimReturn of the task's output when the output is verified and its result holds no error."""
        path = self.path_of(task)
        if not is_verified(self.store, path):
            return None
        try:
            doc = json.loads(self.store.read(f"{path}/{RESULT_FILE}", MAX_RESULT_BYTES))
        except (ValueError, RecursionError, UnreadableFile):
            return None  # unreadable: treat as not finished, the task runs again
        # An error recorded only inside result.json (what `validate --deep` reports) is not reused either.
        if not isinstance(doc, dict) or "error" in doc or "task_id" not in doc:
            return None
        try:
            return sim_return_from_store(self.store, path, result=doc, cached=True)
        except (StoreNotFound, UnreadableFile, UnsafePath):
            # an artifact result.json names is gone, unreadable or no file name: run the task again
            return None

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


def is_verified(store, directory: str) -> bool:
    return output_state(store.names_in(directory)) == VERIFIED


def verified_paths(store, paths: Iterable[str]) -> set[str]:
    """Which result directories are verified, from one listing per param-set directory."""
    store = _open(store)
    wanted = set(paths)
    done: set[str] = set()
    for prefix in sorted({p.rsplit("/", 1)[0] + "/" for p in wanted}):
        done.update(directory for directory, names in store.list_directories(prefix)
                    if directory in wanted and output_state(names) == VERIFIED)
    return done


__all__ = ["IdempotentSimulationService", "verified_paths", "is_verified"]
