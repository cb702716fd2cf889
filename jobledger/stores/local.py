"""A provenance store in a local directory, and the writer of result directories in the
ModelOps worker's format (used by local runs and by tests that need realistic trees)."""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

from ..contracts import sim_return_task_id
from ..layout import ERROR_FILE, METADATA_FILE, RESULT_FILE, artifact_file
from ..fileio import write_atomic
from ..hashing import blake2b_hex
from .base import ProvenanceStore, StoreError, StoreNotFound

T = TypeVar("T")


class LocalStore(ProvenanceStore):
    """Paths relative to ``root``. A request is one directory read, stat or file read."""

    page_size = 0  # a directory read returns the whole directory
    parallel_walk = True

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root = os.path.abspath(os.fspath(root))
        self.url = self.root

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        return cls(url.removeprefix("file://"))

    def list_cost(self, names: int, directories: int) -> int:
        return max(1, directories)

    # ------------------------------------------------------------ listing

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise StoreError(f"store directory {self.root} does not exist or is not a directory")

    def _scan(self, rel: str, name_start: str = "") -> tuple[list[str], list[str]]:
        """(subdirectories, files) of one directory, relative names only; a missing directory is empty."""
        self.count()
        dirs, files = [], []
        try:
            with os.scandir(os.path.join(self.root, rel) if rel else self.root) as entries:
                for entry in entries:
                    name = entry.name
                    if name_start and not name.startswith(name_start):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(name)
                    else:
                        files.append(name)
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        except OSError as exc:
            raise StoreError(f"cannot read {os.path.join(self.root, rel)}: {exc.strerror or exc}") from None
        return dirs, files

    def list_directories(self, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
        """(directory, file names) for every directory with files under ``prefix``, depth first.

        ``prefix`` is a string prefix of relative names, like a blob prefix: ``a/b/`` is the
        directory a/b, ``a/b/c`` the entries of a/b whose names start with ``c``.
        """
        self._check_root()
        base, _, name_start = prefix.rpartition("/")
        dirs, files = self._scan(base, name_start)
        if files:
            yield base, files
        join = (base + "/") if base else ""
        stack = [join + d for d in reversed(dirs)]
        while stack:
            rel = stack.pop()
            dirs, files = self._scan(rel)
            if files:
                yield rel, files
            if dirs:
                stack.extend(rel + "/" + d for d in reversed(dirs))

    def walk_parts(self, parts: list[str], summarize: Callable[[str, list[str]], T]) -> Iterator[list[T]]:
        """``summarize(directory, file names)`` for every directory with files under each part,
        one batch per part. Walking a tree is CPU-bound Python, and threads share one core
        under the GIL, so big walks run in worker processes (one per core)."""
        workers = min(len(parts), os.cpu_count() or 1)
        if workers < 2:
            yield from super().walk_parts(parts, summarize)
            return
        self._check_root()
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for rows, requests in pool.map(_walk_part, repeat(self.root), parts, repeat(summarize)):
                self.count(requests)
                yield rows

    def list_names(self, prefix: str = "") -> Iterator[str]:
        for directory, files in self.list_directories(prefix):
            lead = directory + "/" if directory else ""
            for name in files:
                yield lead + name

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for name in self.list_names(prefix):
            size = self.head(name)
            if size is not None:  # a file removed between the directory read and the stat is gone
                yield name, size

    # ------------------------------------------------------------ single paths

    def head(self, path: str) -> int | None:
        self.count()
        try:
            return os.stat(os.path.join(self.root, path)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot stat {os.path.join(self.root, path)}: {exc.strerror or exc}") from None

    def read(self, path: str) -> bytes:
        self.count()
        full = os.path.join(self.root, path)
        try:
            with open(full, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StoreNotFound(f"{path} not found in store {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {full}: {exc.strerror or exc}") from None


def _walk_part(root: str, part: str, summarize: Callable[[str, list[str]], T]) -> tuple[list[T], int]:
    """One part of a parallel walk, in a worker process: (summaries, directory reads)."""
    store = LocalStore(root)
    rows = [summarize(d, names) for d, names in store.list_directories(part)]
    return rows, store.requests


# ---------------------------------------------------------------- writing result directories

def write_result_dir(directory: str | os.PathLike, *, bundle_ref: str, entrypoint: str, params: Mapping,
                     param_id: str, seed: int, outputs: Mapping[str, bytes], error: Mapping | None = None,
                     complete: bool = True, timestamp: str = "2026-01-01T00:00:00+00:00") -> Path:
    """Write one result directory as a ModelOps worker does, in its write order: metadata.json,
    the artifacts, error_details.arrow on error, result.json last (``complete=False`` stops
    before result.json, as a crash mid-write would)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # A re-run replaces an earlier attempt: its result.json goes first, so that until the new one is
    # written the directory reads as incomplete, never as the old verdict; its error details go
    # when this attempt succeeds.
    (out / RESULT_FILE).unlink(missing_ok=True)
    if error is None:
        (out / ERROR_FILE).unlink(missing_ok=True)
    names = sorted(outputs)
    metadata = {"bundle_ref": bundle_ref, "entrypoint": entrypoint, "params": dict(params), "seed": seed,
                "outputs": names, "param_id": param_id, "timestamp": timestamp}
    write_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2).encode())
    result: dict = {"task_id": sim_return_task_id(param_id, seed, names, error=error is not None), "outputs": {}}
    if error is None:
        for name in names:
            data = outputs[name]
            write_atomic(out / artifact_file(name), data)
            result["outputs"][name] = {"size": len(data), "checksum": blake2b_hex(data)}
    else:
        details = json.dumps(dict(error)).encode()
        write_atomic(out / ERROR_FILE, details)
        result["error"] = {"error_type": error.get("error_type", "RuntimeError"),
                           "message": error.get("message", ""), "retryable": bool(error.get("retryable", False))}
        result["error_details"] = {"size": len(details), "checksum": blake2b_hex(details)}
    if complete:
        write_atomic(out / RESULT_FILE, json.dumps(result, indent=2).encode())
    return out


def write_aggregation_dir(directory: str | os.PathLike, *, bundle_ref: str, target_entrypoint: str,
                          sim_task_ids: list[str], loss: float | None, diagnostics: Mapping | None = None,
                          n_ok: int | None = None, error: Mapping | None = None, complete: bool = True,
                          timestamp: str = "2026-01-01T00:00:00+00:00") -> Path:
    """Write one aggregation directory as the ModelOps runner does: metadata.json, on error
    error_details.arrow, and result.json last (``aggregation_id``, ``loss``, ``diagnostics``
    with ``n_ok``/``n``, ``n_replicates``, ``outputs``, ``inputs``: the SimReturn task ids
    aggregated, in the order they came back). ``directory`` must end in ``agg_<aggregation id>``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)  # a re-run replaces an earlier attempt, as above
    if error is None:
        (out / ERROR_FILE).unlink(missing_ok=True)
    # ModelOps quirk: the 'param_id' field holds the first input's task id prefix, not a param_id.
    metadata = {"bundle_ref": bundle_ref, "target_entrypoint": target_entrypoint,
                "n_sim_returns": len(sim_task_ids), "param_id": sim_task_ids[0][:16] if sim_task_ids else "",
                "timestamp": timestamp}
    write_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2).encode())
    n = len(sim_task_ids)
    result: dict = {"aggregation_id": out.name.removeprefix("agg_"), "loss": loss,
                    "diagnostics": {"n_ok": n if n_ok is None else n_ok, "n": n, **(diagnostics or {})},
                    "n_replicates": n, "outputs": {},
                    "inputs": [{"type": "sim", "task_id": task_id} for task_id in sim_task_ids]}
    if error is not None:
        details = json.dumps(dict(error)).encode()
        write_atomic(out / ERROR_FILE, details)
        result["error"] = {"error_type": error.get("error_type", "RuntimeError"),
                           "message": error.get("message", ""),
                           "retryable": bool(error.get("retryable", False))}
    if complete:
        write_atomic(out / RESULT_FILE, json.dumps(result, indent=2).encode())
    return out
