"""What every provenance store shares: its errors and the base class with the four questions.

Like Luigi's ``FileSystem``: a backend must answer ``list`` (names and sizes under a prefix,
recursive), ``head`` (one path's size or None), ``read`` (one file's bytes) and ``list_cost``;
the rest have defaults built on those, which a backend overrides when it can do better
(``list_names`` without sizes, ``list_directories`` from a native directory walk,
``walk_parts`` in parallel processes). Every request is counted in ``requests`` so a
validation can report them honestly.
"""
from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from itertools import groupby
from typing import TypeVar

from ..errors import JobledgerError
from ..hashing import blake2b_256_of
from ..layout import ERROR_FILE, METADATA_FILE, RESULT_FILE
from ..limits import env_int

T = TypeVar("T")
# A directory holding one of these is a result directory.
RESULT_DIR_FILES = frozenset((RESULT_FILE, ERROR_FILE, METADATA_FILE))
# What scan_part saw: [(parent, {expected entry: file names}, [unexpected entries])],
# [(directory, file names)].
ScanOfPart = tuple[list[tuple[str, dict[str, Sequence[str]], list[str]]], list[tuple[str, list[str]]]]

# The most jobledger reads of one JSON file a worker wrote (result.json, metadata.json): a bigger, sparse or
# endless one is unreadable (an errored output), never a MemoryError.
MAX_RESULT_BYTES = env_int("JOBLEDGER_MAX_RESULT_BYTES", 16 << 20, minimum=1)
# --checksums streams artifacts; one bigger than this is not hashed (an errored output) rather than read
# for hours.
MAX_ARTIFACT_BYTES = env_int("JOBLEDGER_MAX_ARTIFACT_BYTES", 4 << 30, minimum=1)


class StoreError(JobledgerError):
    """The store cannot be reached or read; the message is one line and holds no secret."""


class StoreNotFound(StoreError):
    """A path asked for with ``read`` is not in the store."""


class UnreadableFile(StoreError):
    """A path is there but jobledger will not read it: a symlink, not a regular file, or over the limit."""


class ProvenanceStore:
    url: str = ""          # safe to print: never holds a credential
    page_size: int = 0     # names one listing request returns at most (0: a whole directory)
    parallel_walk = False  # walk_parts runs its parts concurrently itself (validation need not)

    def __init__(self) -> None:
        self._requests = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ request counting (thread-safe)

    @property
    def requests(self) -> int:
        return self._requests

    def count(self, n: int = 1) -> None:
        with self._lock:
            self._requests += n

    # ------------------------------------------------------------ what a backend must answer

    def list_cost(self, names: int, directories: int) -> int:
        """Requests a listing of ``names`` files in ``directories`` directories takes."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(name, size) of every file whose name starts with ``prefix``, in name order."""
        raise NotImplementedError

    def head(self, path: str) -> int | None:
        """The size of ``path``, or None when it is not there."""
        raise NotImplementedError

    def read(self, path: str, limit: int | None = None) -> bytes:
        """The bytes of ``path``; StoreNotFound when it is not there, UnreadableFile when it is more
        than ``limit`` bytes (or, in a directory, not a regular file inside the store)."""
        raise NotImplementedError

    # ------------------------------------------------------------ defaults a backend may improve on

    def chunks(self, path: str, limit: int | None = None) -> Iterator[bytes]:
        """The bytes of ``path`` in pieces (``read``'s rules); backends stream them."""
        yield self.read(path, limit)

    def checksum(self, path: str, limit: int | None = None) -> str:
        """BLAKE2b-256 hex of ``path`` (as workers write into result.json), hashed as it streams."""
        return blake2b_256_of(self.chunks(path, limit))

    def list_names(self, prefix: str = "") -> Iterator[str]:
        for name, _size in self.list(prefix):
            yield name

    # (``list`` below is the method: annotations after it say builtins.list)
    def list_directories(self, prefix: str = "") -> Iterator[tuple[str, builtins.list[str]]]:
        """(directory, names of the files directly in it) for every directory holding files under
        ``prefix``. For a flat listing the names of one directory are contiguous (a prefix is an
        interval of the sorted names), so grouping consecutive names is enough."""
        for directory, names in groupby(self.list_names(prefix), key=lambda name: name.rpartition("/")[0]):
            yield directory, [name.rpartition("/")[2] for name in names]

    def names_in(self, directory: str) -> builtins.list[str]:
        """The names of the files directly in one directory (one listing of it)."""
        return [name for found, names in self.list_directories(directory + "/") if found == directory
                for name in names]

    def walk_parts(self, parts: builtins.list[str],
                   summarize: Callable[[str, builtins.list[str]], T]) -> Iterator[builtins.list[T]]:
        """``summarize(directory, file names)`` for every directory with files under each part, one
        batch per part, one part after the other (backends with ``parallel_walk`` do better)."""
        for part in parts:
            yield [summarize(d, names) for d, names in self.list_directories(part)]

    def scan_part(self, part: str, parents: Mapping[str, Container[str]]) -> ScanOfPart:
        """Walk ``part`` (a name prefix, like ``list_directories``) for the ``scan`` strategy, reading each
        directory named in ``parents`` as the parent of the entries it maps to (a param set's seeds).
        Returns (parent, {expected entry: file names}, [result directories in or under its other
        entries, relative to the parent]) for each such parent found, and (directory, file names) for
        every other directory holding files. The file names of an expected entry may be only the markers
        a backend probed (see LocalStore); layout.output_state decides from either. This default groups
        a listing."""
        surveyed: dict[str, dict[str, Sequence[str]]] = {}
        others: list[tuple[str, list[str]]] = []
        for directory, names in self.list_directories(part):
            parent, _, entry = directory.rpartition("/")
            expected = parents.get(parent)
            if expected is not None and entry in expected:
                surveyed.setdefault(parent, {})[entry] = names
            else:
                others.append((directory, names))
        return [(parent, found, []) for parent, found in surveyed.items()], others
