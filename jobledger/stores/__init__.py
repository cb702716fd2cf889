"""Provenance stores: where workers' result files live (a directory, or Azure Blob).

Every backend answers the same four questions about paths relative to the store's root:
``list`` (names and sizes under a prefix, recursive), ``list_names`` (names only, the lean
listing), ``head`` (one path's size or None) and ``read`` (one file's bytes). Each counts
the requests it makes in ``requests`` so a validation can report them honestly.
"""
from __future__ import annotations

import os
import re
import threading
from itertools import groupby
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from ..errors import JobledgerError
from ..redact import redact_url

DEFAULT_STORE = "/tmp/modelops/provenance"


class StoreError(JobledgerError):
    """The store cannot be reached or read; the message is one line and holds no secret."""


class StoreNotFound(StoreError):
    """A path asked for with ``read`` is not in the store."""


@runtime_checkable
class ProvenanceStore(Protocol):
    url: str            # safe to print: never holds a credential
    page_size: int      # names one listing request returns at most
    requests: int       # requests made so far (listing pages, heads, reads, directory reads)

    def list_cost(self, names: int, directories: int) -> int:
        """Requests a listing of ``names`` files in ``directories`` directories takes."""

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    def list_names(self, prefix: str = "") -> Iterator[str]: ...

    def head(self, path: str) -> int | None: ...

    def read(self, path: str) -> bytes: ...


class RequestCounter:
    """Thread-safe request counting shared by the backends."""

    def __init__(self) -> None:
        self._requests = 0
        self._lock = threading.Lock()

    @property
    def requests(self) -> int:
        return self._requests

    def count(self, n: int = 1) -> None:
        with self._lock:
            self._requests += n


def default_store_url() -> str:
    return os.environ.get("JOBLEDGER_STORE") or os.environ.get("MODELOPS_STORAGE_DIR") or DEFAULT_STORE


def normalize_store_url(url: str | None) -> str:
    """A stable form to record in the ledger: local paths become absolute; URLs are kept."""
    url = url or default_store_url()
    if url.startswith(("az://", "https://", "http://")):
        return url
    if url.startswith("file://"):
        return "file://" + str(Path(url[len("file://"):]).expanduser().resolve())
    return str(Path(url).expanduser().resolve())


def open_store(url: str | None) -> ProvenanceStore:
    """The store behind a URL: a local path or ``file://`` URL, ``az://CONTAINER/PREFIX``, or
    ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`` (``http://`` for Azurite)."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url or "")
    if scheme and scheme.group(1).lower() not in ("file", "az", "https", "http"):
        raise StoreError(f"unsupported store URL {redact_url(url)!r} (use a path, file://, az:// or https://)")
    url = normalize_store_url(url)
    if url.startswith(("az://", "https://", "http://")):
        from .azure import AzureStore  # the Azure SDK is imported only for Azure stores
        return AzureStore(url)
    from .local import LocalStore
    return LocalStore(url[len("file://"):] if url.startswith("file://") else url)


def list_directories(store: ProvenanceStore, prefix: str) -> Iterator[tuple[str, list[str]]]:
    """(directory, names of the files directly in it) for every directory holding files under
    ``prefix``. Backends that walk directories natively provide ``list_directories``; for flat
    listings the names of one directory are contiguous (a prefix is an interval of the sorted
    names), so grouping consecutive names is enough."""
    native = getattr(store, "list_directories", None)
    if native is not None:
        yield from native(prefix)
        return
    for directory, names in groupby(store.list_names(prefix), key=lambda name: name.rpartition("/")[0]):
        yield directory, [name.rpartition("/")[2] for name in names]
