"""Deep checks (``validate --deep``): read the files of outputs the listing called verified or
errored, and demote those whose contents contradict it (wrong metadata, a missing or resized
artifact, with ``--checksums`` a BLAKE2b mismatch). Every store request of a deep check has a time
limit (``--read-timeout``): an output whose read stalls is errored and the others are still read."""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .hashing import blake2b_256_of
from .layout import METADATA_FILE, RESULT_FILE, artifact_file
from .ledger import Ledger
from .limits import READ_TIMEOUT
from .paths import unsafe_reason
from .stores import MAX_ARTIFACT_BYTES, MAX_RESULT_BYTES, ProvenanceStore, StoreNotFound, UnreadableFile

READ_THREADS = 16

T = TypeVar("T")
R = TypeVar("R")


class TimedStore:
    """The store as one reader thread uses it: each request notes, in one tuple the waiting thread reads
    at once, the item it is for, what it does and since when. Streaming restarts the clock at every
    chunk: a big artifact may take long to hash, a stalled one may not."""

    def __init__(self, store: ProvenanceStore):
        self.store = store
        self.item = -1
        self.busy: tuple[int, str, float] | None = None
        self.left_behind = False  # its request stalled and another thread took its place

    def _timed(self, what: str, request: Callable[[], R]) -> R:
        self.busy = (self.item, what, time.monotonic())
        try:
            return request()
        finally:
            self.busy = None

    def read(self, path: str, limit: int | None = None) -> bytes:
        return self._timed(f"reading {path.rpartition('/')[2]}", lambda: self.store.read(path, limit))

    def list(self, prefix: str) -> list[tuple[str, int]]:
        return self._timed("listing the output directory", lambda: list(self.store.list(prefix)))

    def checksum(self, path: str, limit: int | None = None) -> str:
        what = f"reading {path.rpartition('/')[2]}"

        def timed_chunks() -> Iterator[bytes]:
            chunks = iter(self.store.chunks(path, limit))
            while (chunk := self._timed(what, lambda: next(chunks, None))) is not None:
                yield chunk
        return blake2b_256_of(timed_chunks())


def timed_map(check: Callable[[TimedStore, T], R], items: Sequence[T], store: ProvenanceStore, *,
              timeout: float | None, threads: int = READ_THREADS) -> Iterator[tuple[T, R | None, str | None]]:
    """(item, check(its TimedStore, item), None) for each item as reader threads finish it, or (item,
    None, "reading result.json took longer than 60 s") when one of its requests outlasts ``timeout``
    seconds (None or 0: no limit). An exception of ``check`` is raised here.

    A stalled thread is left behind and a new one takes its place. The readers are daemon threads
    because a read stuck in the kernel (a hung NFS or FUSE mount, a blob download that never ends)
    cannot be interrupted, and the interpreter joins ThreadPoolExecutor's threads when it exits
    (concurrent.futures registers that join): one stuck read would keep a finished validation's
    process alive forever. A daemon thread is not waited for."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def read(view: TimedStore) -> None:
        while not (stop.is_set() or view.left_behind):
            try:
                view.item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((view.item, check(view, items[view.item]), None))
            except Exception as exc:  # raised in the waiting thread
                done.put((view.item, None, exc))

    def start() -> TimedStore:
        view = TimedStore(store)
        threading.Thread(target=read, args=(view,), name="timed-read", daemon=True).start()
        return view

    views = [start() for _ in range(min(threads, len(items)))]
    waiting = set(range(len(items)))
    tick = min(1.0, timeout / 4) if timeout else 1.0
    next_look = time.monotonic() + tick
    try:
        while waiting:
            try:
                i, result, exc = done.get(timeout=tick)
            except queue.Empty:
                pass
            else:
                if exc is not None:
                    raise exc
                if i in waiting:  # else it was given up on: its late answer is dropped
                    waiting.discard(i)
                    yield items[i], result, None
            now = time.monotonic()
            if not timeout or now < next_look:
                continue
            next_look = now + tick
            for n, view in enumerate(views):
                busy = view.busy
                if busy is not None and now - busy[2] > timeout and busy[0] in waiting:
                    waiting.discard(busy[0])
                    view.left_behind = True
                    views[n] = start()
                    yield items[busy[0]], None, f"{busy[1]} took longer than {timeout:g} s"
    finally:
        stop.set()


_ABSENT = object()


def _read_json(store: TimedStore, directory: str, name: str) -> tuple[Any, tuple[str, str] | None]:
    """(document, None), or (_ABSENT or None, (state, reason)) when the file is absent, unreadable or
    not a JSON object."""
    try:
        doc = json.loads(store.read(f"{directory}/{name}", MAX_RESULT_BYTES))
    except StoreNotFound:
        return _ABSENT, ("errored", f"{name} is missing")
    except UnreadableFile as exc:
        return None, ("errored", str(exc)[:500])
    except (ValueError, RecursionError):
        return None, ("errored", f"{name} is not valid JSON")
    if not isinstance(doc, dict):
        return None, ("errored", f"{name} is not a JSON object")
    return doc, None


def _deep_check(store: TimedStore, row: dict, checksums: bool) -> tuple[str, str] | None:
    """(state, reason) when reading the files contradicts the listing's verdict, else None."""
    path = row["path"]
    result, problem = _read_json(store, path, RESULT_FILE)
    if problem:
        return ("incomplete", "result.json disappeared during validation") if result is _ABSENT else problem
    error = result.get("error") if isinstance(result, dict) else None
    if row["state"] == "errored" or error:
        if isinstance(error, dict):
            kind, message = error.get("error_type", "Error"), error.get("message", "")
            return "errored", f"worker error: {kind}: {message}"[:500]
        return ("errored", "the worker wrote error_details.arrow") if row["state"] == "errored" else \
            ("errored", "result.json reports an error")
    if not isinstance(result, dict) or not isinstance(result.get("outputs"), dict):
        return "errored", "result.json has no 'outputs' object"
    if row["kind"] == "simulation":
        meta, problem = _read_json(store, path, METADATA_FILE)
        if problem:
            return problem
        # A result path ModelOps reported (no spec) has no known param_id or entrypoint, only its seed.
        if row["param_id"] and meta.get("param_id") != row["param_id"]:
            return "errored", f"metadata.json param_id {str(meta.get('param_id'))[:16]}… is not the " \
                              f"expected " \
                              f"{row['param_id'][:16]}…"
        if row["entrypoint"] and meta.get("entrypoint") != row["entrypoint"]:
            return "errored", (f"metadata.json entrypoint {meta.get('entrypoint')!r} is not "
                               f"{row['entrypoint']!r}")
        if row["run_seed"] is not None and str(meta.get("seed")) != str(row["run_seed"]):
            return "errored", f"metadata.json seed {meta.get('seed')} is not {row['run_seed']}"
    declared = json.loads(row["outputs"]) if row["outputs"] else None
    if declared:
        absent = sorted(set(declared) - set(result["outputs"]))
        if absent:
            return "errored", f"result.json lacks declared output(s) {', '.join(absent)}"
    sizes = dict(store.list(path + "/"))
    for name, info in sorted(result["outputs"].items()):
        if unsafe_reason(name) or "/" in name:
            return "errored", f"result.json names an output {name[:40]!r} that is no file name"
        file = artifact_file(name)
        size = sizes.get(f"{path}/{file}")
        if size is None:
            return "errored", f"{file} is missing"
        if isinstance(info, dict) and info.get("size") is not None and size != info["size"]:
            return "errored", f"{file} is {size} bytes, result.json says {info['size']}"
        if checksums and isinstance(info, dict) and info.get("checksum"):
            try:
                if store.checksum(f"{path}/{file}", MAX_ARTIFACT_BYTES) != info["checksum"]:
                    return "errored", f"{file} checksum does not match result.json"
            except UnreadableFile as exc:
                return "errored", str(exc)[:500]
    return None


def deep_check(ledger: Ledger, store: ProvenanceStore, *, checksums: bool, progress=None,
               read_timeout: float | None = READ_TIMEOUT) -> int:
    """Read the files of verified (and errored) simulation outputs (aggregations: jobledger.aggregations);
    demote contradicted ones, and those whose reads outlast ``read_timeout`` seconds, in ``observed``."""
    rows = ledger.query(
        "SELECT obs.output_id, obs.state, e.path, e.output_type AS kind, e.param_id, e.entrypoint, "
        "e.outputs, e.run_seed FROM observed obs JOIN expected_outputs e ON e.output_id = obs.output_id "
        "WHERE obs.state IN ('verified', 'errored') AND e.output_type = 'simulation'")
    changes = []
    for row, found, stalled in timed_map(lambda view, row: _deep_check(view, row, checksums), rows, store,
                                         timeout=read_timeout):
        if progress is not None:
            progress.advance(1)
        if stalled:
            found = ("errored", stalled)
        if found is not None:
            changes.append((found[0], found[1], row["output_id"]))
    ledger.conn.executemany("UPDATE observed SET state = ?, detail = ? WHERE output_id = ?", changes)
    return len(changes)


__all__ = ["deep_check", "timed_map", "TimedStore"]
