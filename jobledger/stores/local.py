"""A provenance store in a local directory, and the writer of result directories in the
ModelOps worker's format (used by local runs and by tests that need realistic trees)."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import TypeVar

from ..contracts import sim_return_task_id
from ..fileio import write_atomic
from ..hashing import blake2b_hex
from ..layout import ERROR_FILE, METADATA_FILE, RESULT_FILE, artifact_file
from ..paths import check_relative, inside
from .base import ProvenanceStore, StoreError, StoreNotFound, UnreadableFile

T = TypeVar("T")


class LocalStore(ProvenanceStore):
    """Paths relative to ``root``. A request is one directory read, stat or file read."""

    page_size = 0  # a directory read returns the whole directory
    parallel_walk = True

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root = os.path.abspath(os.fspath(root))
        self.url = self.root
        self._real_root = os.path.realpath(self.root)

    # ------------------------------------------------------------ containment

    def _full(self, rel: str) -> str:
        """The file system path of a store-relative path; a path that would leave the store is refused."""
        return os.path.join(self.root, check_relative(rel, "store path")) if rel else self.root

    def _contained(self, full: str) -> bool:
        """Whether ``full`` resolves (symlinks followed) to the store or below: reads never leave it."""
        return inside(self._real_root, full)

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
            with os.scandir(self._full(rel)) as entries:
                for entry in entries:
                    name = entry.name
                    if name_start and not name.startswith(name_start):
                        continue
                    if entry.is_symlink() or not name.isprintable() or "\\" in name:
                        # A link could lead out of the store; a name with control characters or bytes
                        # that are not UTF-8 is no path jobledger expects (and cannot be recorded).
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
        if not self._contained(self._full(base)):
            return  # the prefix runs through a link out of the store: nothing of the store is there
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
        """The size of a regular file at ``path`` inside the store; links and special files are not
        results."""
        self.count()
        full = self._full(path)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot stat {full}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode) or not self._contained(os.path.dirname(full)):
            return None
        return st.st_size

    def _open(self, path: str, limit: int | None) -> tuple[int, int]:
        """(descriptor, size) of a regular file inside the store, not through a link, within ``limit``.
        O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused right after)."""
        self.count()
        full = self._full(path)
        if not self._contained(os.path.dirname(full)):
            raise UnreadableFile(f"{path}: its directory is a link out of the store")
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreNotFound(f"{path} not found in store {self.root}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnreadableFile(f"{path} is a symbolic link") from None
            raise StoreError(f"cannot read {full}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise StoreNotFound(f"{path} not found in store {self.root} (a directory)")
            raise UnreadableFile(f"{path} is not a regular file")
        if limit is not None and st.st_size > limit:
            os.close(fd)
            raise UnreadableFile(f"{path} is {st.st_size} bytes, over the {limit}-byte limit")
        return fd, st.st_size

    def chunks(self, path: str, limit: int | None = None) -> Iterator[bytes]:
        fd, _size = self._open(path, limit)
        total = 0
        try:
            with open(fd, "rb", closefd=True) as handle:
                while chunk := handle.read(1 << 20):
                    total += len(chunk)
                    if limit is not None and total > limit:  # it grew while being read
                        raise UnreadableFile(f"{path} grew over the {limit}-byte limit while being read")
                    yield chunk
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None

    def read(self, path: str, limit: int | None = None) -> bytes:
        return b"".join(self.chunks(path, limit))



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
    task_id = sim_return_task_id(param_id, seed, names, error=error is not None)
    result: dict = {"task_id": task_id, "outputs": {}}
    if error is None:
        for name in names:
            data = outputs[name]
            write_atomic(out / artifact_file(name), data)
            result["outputs"][name] = {"size": len(data), "checksum": blake2b_hex(data)}
    else:
        details = json.dumps(dict(error)).encode()
        write_atomic(out / ERROR_FILE, details)
        result["error"] = {"error_type": error.get("error_type", "RuntimeError"),
                           "message": error.get("message", ""),
                           "retryable": bool(error.get("retryable", False))}
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
