"""The shared job registry: a VersionedStore (compare-and-swap blobs) and the ledger mirror on top of it.

Backends: ``az://CONTAINER[/PREFIX]`` (Azure Blob, credentials from AZURE_STORAGE_CONNECTION_STRING)
and ``file:///path`` or a plain path (a directory, also usable on a shared filesystem).
Backends import their heavy dependencies lazily so that commands without a registry start fast.
"""
from __future__ import annotations

import importlib

from ..redact import redact_url, refuse_sas
from .base import MovedElsewhere, RegistryError, VersionedStore, check_key
from .mirror import Mirror

# Registry URL scheme → the class that opens it, imported on first use (like DVC's known_implementations):
# the Azure SDK is only loaded by commands that use an az:// registry. A URL without a scheme is a path.
KNOWN_IMPLEMENTATIONS: dict[str, str] = {
    "az": "jobledger.registry.azure:AzureVersionedStore",
    "file": "jobledger.registry.local:LocalVersionedStore",
}


def open_versioned_store(url: str) -> VersionedStore:
    url = refuse_sas((url or "").strip(), "registry", RegistryError)
    if not url:
        raise RegistryError("empty registry URL")
    scheme = url.partition("://")[0] if "://" in url else "file"
    target = KNOWN_IMPLEMENTATIONS.get(scheme)
    if target is None:
        raise RegistryError(f"registry {redact_url(url)}: unsupported scheme (use az://CONTAINER[/PREFIX] or file:///path)")
    module, _, name = target.partition(":")
    store_class = getattr(importlib.import_module(module), name)
    return store_class.from_url(url)


def open_mirror(url: str) -> Mirror:
    """The mirror a Ledger consults before every status change (see jobledger.registry.mirror)."""
    return Mirror(open_versioned_store(url))


__all__ = ["RegistryError", "MovedElsewhere", "VersionedStore", "open_versioned_store", "open_mirror",
           "check_key",
           "KNOWN_IMPLEMENTATIONS"]
