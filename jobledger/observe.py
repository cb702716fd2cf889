"""Observation: what a validation strategy sees in the store, streamed into ``temp.listing``.

One row per directory holding files: ``has result.json``, ``has error_details.arrow``, ``has
metadata.json``, the number of files and, for a job with targets, the output names the worker
returned (its ``artifact_<name>.*`` files: jobledger.aggregations computes task ids from them).
``list`` walks the plan's parts (in parallel: threads, or worker processes for stores with
``parallel_walk``); ``head`` probes each expected output's directory and lists the target
directories of a job's aggregations. Rows reach SQLite on the calling thread, so the connection
never changes threads.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .layout import ERROR_FILE, METADATA_FILE, RESULT_FILE, returned_outputs
from .ledger import Ledger
from .staging import temp_transaction
from .stores import ProvenanceStore

LIST_THREADS = 16
PROBE_THREADS = 16
BATCH = 2000
# The listing flag that records each marker file's presence (see directory_row).
LISTING_FLAGS = {RESULT_FILE: "has_result", ERROR_FILE: "has_error", METADATA_FILE: "has_metadata"}


class ListingPlan(Protocol):
    strategy: str          # 'list' or 'head'
    parts: list[str]       # prefixes a 'list' walks
    target_dirs: list[str]  # where the job's aggregations are (a 'head' lists them)


def directory_row(directory: str, names: list[str]) -> tuple:
    return (directory, RESULT_FILE in names, ERROR_FILE in names, METADATA_FILE in names, len(names), None)


def directory_row_with_outputs(directory: str, names: list[str]) -> tuple:
    """A listing row that also keeps the output names the worker returned: a job with targets needs
    them to know its replicates' task ids; other jobs skip the cost."""
    return (directory, RESULT_FILE in names, ERROR_FILE in names, METADATA_FILE in names, len(names),
            returned_outputs(names))


def _run_threads(producers: list[Callable[[Callable[[list], None]], None]], threads: int,
                 consume: Callable[[list], None]) -> None:
    """Run producers in threads; each hands batches of rows to ``consume`` on this thread
    (the SQLite connection stays on one thread). The first error stops everything: producers not
    started are cancelled, running ones stop before their next request (``emit.stopped``), and the
    error is raised without waiting for requests in flight, so a dead store is one error within
    seconds, not every thread's retries in turn."""
    batches: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()
    done = object()

    def emit(batch: list) -> None:
        while not stop.is_set():
            try:
                batches.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def stopped() -> None:
        if stop.is_set():
            raise _Stopped()

    emit.stopped = stopped  # type: ignore[attr-defined]

    def run(producer) -> None:
        try:
            producer(emit)
            batches.put(done)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            batches.put(exc)

    pool = ThreadPoolExecutor(max(1, min(threads, len(producers))))
    for producer in producers:
        pool.submit(run, producer)
    remaining = len(producers)
    failed = True
    try:
        while remaining:
            item = batches.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                consume(item)
        failed = False
    finally:
        stop.set()
        while True:  # unblock producers waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                break
        pool.shutdown(wait=not failed, cancel_futures=True)


class _Stopped(Exception):
    pass


def _list_producer(store: ProvenanceStore, part: str, row=directory_row):
    def produce(emit) -> None:
        batch = []
        for directory, names in store.list_directories(part):
            batch.append(row(directory, names))
            if len(batch) >= BATCH:
                emit(batch)
                batch = []
        if batch:
            emit(batch)
    return produce


def _probe_producer(store: ProvenanceStore, paths: list[str], row=directory_row):
    def produce(emit) -> None:
        batch = []
        for path in paths:
            emit.stopped()  # another thread failed: no further request
            names = store.names_in(path)
            if names:
                batch.append(row(path, names))
            if len(batch) >= 200:
                emit(batch)
                batch = []
        if batch:
            emit(batch)
    return produce


def observe(ledger: Ledger, job_id: str, store: ProvenanceStore, plan: ListingPlan, progress=None) -> None:
    """Fill ``temp.listing`` with one row per directory the strategy saw."""
    conn = ledger.conn
    conn.execute("DROP TABLE IF EXISTS temp.listing")
    conn.execute("CREATE TEMP TABLE listing (dir TEXT NOT NULL, has_result INTEGER NOT NULL, "
                 "has_error INTEGER NOT NULL, has_metadata INTEGER NOT NULL, files INTEGER NOT NULL, "
                 "outputs TEXT)")
    row = directory_row_with_outputs if plan.target_dirs else directory_row
    store_walks = plan.strategy == "list" and store.parallel_walk
    if store_walks:
        producers = []  # the store walks the parts itself, in parallel processes
    elif plan.strategy == "list":
        producers = [_list_producer(store, part, row) for part in plan.parts]
    else:
        paths = [r[0] for r in conn.execute("SELECT DISTINCT path FROM outputs WHERE job_id = ? "
                                            "AND kind = 'simulation'", (job_id,))]
        size = max(1, -(-len(paths) // (PROBE_THREADS * 4)))
        producers = [_probe_producer(store, paths[i:i + size], row) for i in range(0, len(paths), size)]
        # An aggregation's directory is not known in advance: its target directory is listed.
        producers += [_list_producer(store, target_dir + "/", row) for target_dir in plan.target_dirs]
    def consume(batch: list) -> None:
        conn.executemany("INSERT INTO listing VALUES (?,?,?,?,?,?)", batch)
        if progress is not None:
            progress.advance(len(batch))

    with temp_transaction(conn):  # only temp tables are written: no lock on the ledger itself
        if store_walks:
            for batch in store.walk_parts(plan.parts, row):
                consume(batch)
        else:
            _run_threads(producers, LIST_THREADS if plan.strategy == "list" else PROBE_THREADS, consume)
        conn.execute("CREATE INDEX temp.listing_dir ON listing(dir)")

__all__ = ["observe", "directory_row", "directory_row_with_outputs", "LISTING_FLAGS", "ListingPlan"]
