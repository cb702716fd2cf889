"""A provenance store in a local directory, and the writer of result directories in the
ModelOps worker's format (used by local runs and by tests that need realistic trees)."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import TypeVar

from ..contracts import sim_return_task_id
from ..fileio import write_atomic
from ..hashing import blake2b_hex
from ..layout import ERROR_FILE, MARKER_FILES, METADATA_FILE, RESULT_FILE, artifact_file
from ..paths import check_relative, inside
from .base import RESULT_DIR_FILES, ProvenanceStore, ScanOfPart, StoreError, StoreNotFound, UnreadableFile

T = TypeVar("T")
Names = list[str]  # (LocalStore.list hides the builtin inside the class)
Survey = tuple[dict[str, Sequence[str]], Names]
# What survey probes in an expected result directory, in OUTPUT_STATE_RULES order, and the names it
# returns when that marker is there (one shared tuple per marker: a million outputs, no new lists).
_MARKER_PROBES = tuple(("/" + marker, (marker,)) for marker in MARKER_FILES)
_USUALLY_ABSENT, _USUALLY_THERE = _MARKER_PROBES[:-1], _MARKER_PROBES[-1]


def _probe_markers(fd: int, entry: str) -> tuple[Sequence[str] | None, int]:
    """(the first marker file present in ``entry`` as names, probes made); (None, n) when none is. A
    marker must be a file, not a directory or a link (a listing skips links). Every marker but the last is
    usually absent: a cheap access() finds that (an lstat would raise), and the rare hit is confirmed
    with lstat. The last (result.json) is usually there: lstat answers at once."""
    probes = 0
    for suffix, names in _USUALLY_ABSENT:
        probes += 1
        if os.access(entry + suffix, os.F_OK, dir_fd=fd, follow_symlinks=False):
            probes += 1
            if _is_file(fd, entry + suffix):
                return names, probes
    suffix, names = _USUALLY_THERE
    return (names if _is_file(fd, entry + suffix) else None), probes + 1


def _is_file(fd: int, relative: str) -> bool:
    """What a listing counts as a file: there, and neither a directory nor a link."""
    try:
        mode = os.stat(relative, dir_fd=fd, follow_symlinks=False).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode)


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

    def scan_part(self, part: str, parents: Mapping[str, Container[str]]) -> ScanOfPart:
        """The walk of list_directories, except that a directory in ``parents`` is surveyed (see below)
        instead of walked: the directories above the parents are read to find result directories
        nobody expected, the parents' own entries are not read one by one."""
        self._check_root()
        scanned: ScanOfPart = ([], [])
        surveyed, others = scanned
        base, _, name_start = part.rpartition("/")
        if not self._contained(self._full(base)):
            return scanned  # the part runs through a link out of the store
        stack = [(base, name_start)]
        while stack:
            rel, start = stack.pop()
            expected = parents.get(rel) if not start else None
            if expected is not None:
                found, unexpected = self.survey(rel, expected)
                surveyed.append((rel, found, unexpected))
                continue
            dirs, files = self._scan(rel, start)
            if files:
                others.append((rel, files))
            lead = f"{rel}/" if rel else ""
            stack.extend((lead + d, "") for d in reversed(dirs))
        return scanned

    def survey(self, parent: str, expected: Container[str]) -> Survey:
        """One read of ``parent`` shows which of its entries are there: ({expected entry: names},
        [result directories in or under the other entries, relative to ``parent``]). An expected
        entry's own subdirectories are not looked into. For an expected entry the marker files are
        probed in OUTPUT_STATE_RULES order and the first present is its only name returned (two probes
        for a verified output, one for an errored one); an entry with no marker is read whole
        (incomplete, or empty: left out). Probes are relative to ``parent``'s open descriptor, so the
        kernel resolves two path components, not the whole path. As in a listing, links (a result
        directory or marker that is a link) and names that are no path are not results."""
        self.count()
        try:
            fd = os.open(self._full(parent), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return {}, []
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return {}, []  # the parent directory is a link
            where = os.path.join(self.root, parent)
            raise StoreError(f"cannot read {where}: {exc.strerror or exc}") from None
        found: dict[str, Sequence[str]] = {}
        unexpected: list[str] = []
        probes = 0
        try:
            with os.scandir(fd) as entries:
                for item in entries:
                    entry = item.name
                    if entry in expected:
                        if item.is_symlink():
                            continue  # a link is no result directory (a listing does not follow it)
                        names, n = _probe_markers(fd, entry)
                        probes += n
                        if names is None:
                            probes += 1
                            names = self._files(os.path.join(self.root, parent, entry))
                        if names:
                            found[entry] = names
                    elif (item.is_dir(follow_symlinks=False) and entry.isprintable()
                          and "\\" not in entry):  # walked like a listing, for result directories
                        rel = f"{parent}/{entry}" if parent else entry
                        for directory, dir_names in self.list_directories(rel + "/"):
                            if RESULT_DIR_FILES.intersection(dir_names):
                                unexpected.append(directory[len(parent) + 1:] if parent else directory)
        except OSError as exc:
            where = os.path.join(self.root, parent)
            raise StoreError(f"cannot read {where}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
            self.count(probes)
        return found, unexpected

    @staticmethod
    def _files(directory: str) -> Names:
        """Names of the files (not subdirectories, not links) in ``directory``, as a listing shows them."""
        try:
            with os.scandir(directory) as entries:
                return [e.name for e in entries if not e.is_symlink() and e.name.isprintable()
                        and "\\" not in e.name and not e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

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
