"""The shared job registry: a VersionedStore (compare-and-swap blobs) and the ledger mirror on top of it.

Backends: ``az://CONTAINER[/PREFIX]`` (Azure Blob, credentials from AZURE_STORAGE_CONNECTION_STRING)
and ``file:///path`` or a plain path (a directory, also usable on a shared filesystem).
Backends import their heavy dependencies lazily so that commands without a registry start fast.
"""
from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

from ..errors import JobledgerError


class RegistryError(JobledgerError):
    """The registry is unreachable, refused a request, or holds something jobledger cannot use."""


class MovedElsewhere(RegistryError):
    """Another machine already moved the job to a status from which this move is no longer legal."""

    def __init__(self, message: str, job_id: str, remote_status: str):
        super().__init__(message)
        self.job_id = job_id
        self.remote_status = remote_status


@runtime_checkable
class VersionedStore(Protocol):
    """Blobs with an opaque version token that changes on every write (an ETag)."""

    url: str

    def get(self, key: str) -> tuple[bytes, str] | None:
        """Content and version in one read, or None when the key does not exist."""

    def put(self, key: str, data: bytes, version: str) -> bool:
        """Replace the content only if it is still at ``version``; False on a version mismatch."""

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Create the key; False when it already exists (its content is left alone)."""

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``; errors raise, they never look like an empty listing."""

    def delete(self, key: str) -> bool:
        """Remove the key; False when it did not exist."""


def check_key(key: str) -> str:
    """Keys are relative slash-separated names without empty, '.' or '..' parts."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise RegistryError(f"invalid registry key {key!r}")
    return key


def open_versioned_store(url: str) -> VersionedStore:
    url = (url or "").strip()
    if not url:
        raise RegistryError("empty registry URL")
    if url.startswith("az://"):
        from .azure import AzureVersionedStore
        return AzureVersionedStore.from_url(url)
    if url.startswith("file://"):
        from .local import LocalVersionedStore
        return LocalVersionedStore(url[len("file://"):])
    if "://" in url:
        raise RegistryError(f"registry {url}: unsupported scheme (use az://CONTAINER[/PREFIX] or file:///path)")
    from .local import LocalVersionedStore
    return LocalVersionedStore(url)


def open_mirror(url: str):
    """The mirror a Ledger consults before every status change (see jobledger.registry.mirror)."""
    from .mirror import Mirror
    return Mirror(open_versioned_store(url))


__all__ = ["RegistryError", "VersionedStore", "open_versioned_store", "open_mirror", "check_key"]
