"""The listing strategies (``list``, ``head``): what the store shows, streamed into ``temp.listing``,
then classified into ``temp.observed`` with one set-based join (see recording).

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

from .layout import (
    ERROR_FILE,
    ERRORED,
    INCOMPLETE,
    METADATA_FILE,
    MISSING,
    OUTPUT_STATE_RULES,
    RESULT_FILE,
    returned_outputs,
)
from .ledger import Ledger
from .recording import new_observation
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

# ------------------------------------------------------------ classify (deep.py, aggregations.py refine it)

def state_case_sql(listing: str = "l") -> str:
    """layout.output_state as a SQL expression over a ``listing`` row (no row: nothing there)."""
    rules = " ".join(f"WHEN {listing}.{LISTING_FLAGS[name]} THEN '{state}'" for name,
                     state in OUTPUT_STATE_RULES)
    return f"CASE WHEN {listing}.dir IS NULL THEN '{MISSING}' {rules} ELSE '{INCOMPLETE}' END"


CLASSIFY_SQL = f"""
INSERT INTO observed (output_id, state, detail, listing_row)
SELECT output_id, state,
       CASE state WHEN '{ERRORED}' THEN 'the worker wrote {ERROR_FILE}'
                  WHEN '{INCOMPLETE}' THEN 'no {RESULT_FILE} (' || files || ' file'
                       || CASE files WHEN 1 THEN '' ELSE 's' END || ' written)' END,
       listing_row
FROM (SELECT o.output_id, {state_case_sql("l")} AS state, l.files, l.rowid AS listing_row
      FROM manifest o LEFT JOIN listing l ON l.dir = o.path
      WHERE o.job_id = ?)
"""


def classify(ledger: Ledger, job_id: str) -> None:
    """One set-based pass: every expected output of the job gets a state in ``temp.observed``."""
    new_observation(ledger)
    ledger.conn.execute(CLASSIFY_SQL, (job_id,))


# ---------------------------------------------------------------- unexpected directories

_STRAY = ("(l.has_result OR l.has_metadata OR l.has_error) "
          # listing rows no expected output matched: an anti-join on integers, not on paths
          "AND l.rowid NOT IN (SELECT listing_row FROM observed WHERE listing_row IS NOT NULL) "
          # nor those another output claims: older aggregations of a param set, other jobs' outputs
          "AND l.rowid NOT IN (SELECT listing_row FROM claimed)")


def _claim_what_other_jobs_expect(ledger: Ledger, job: dict) -> None:
    """A result directory another job of the same store expects is that job's, not unexpected here
    (jobs share a store). Looked up only when the listing has directories this job does not
    expect: one pass over the other jobs' outputs, probing the listing's index."""
    conn = ledger.conn
    if conn.execute(f"SELECT 1 FROM listing l WHERE {_STRAY} LIMIT 1").fetchone() is None:
        return
    conn.execute("INSERT OR IGNORE INTO claimed SELECT l.rowid FROM manifest o "
                 "JOIN listing l ON l.dir = o.path "
                 "WHERE o.job_id IN (SELECT job_id FROM jobs WHERE store_url IS ? AND job_id <> ?)",
                 (job["store_url"], job["job_id"]))


def unexpected_from_listing(ledger: Ledger, job: dict) -> None:
    """The listed result directories no output of this job (nor of another job of the store) claims, into
    ``temp.unexpected``."""
    _claim_what_other_jobs_expect(ledger, job)
    ledger.conn.execute(f"INSERT OR IGNORE INTO temp.unexpected (path) SELECT l.dir FROM listing l "
                        f"WHERE {_STRAY}")


__all__ = ["observe", "classify", "state_case_sql", "unexpected_from_listing", "directory_row",
           "directory_row_with_outputs", "LISTING_FLAGS", "ListingPlan"]
