"""Provenance stores: where workers' result files live (a directory, or Azure Blob).

``base.ProvenanceStore`` says what every backend answers; ``open_store`` picks the backend by
the URL's scheme from one table.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

from ..redact import redact_url, refuse_sas
from .base import (
    MAX_ARTIFACT_BYTES,
    MAX_RESULT_BYTES,
    ProvenanceStore,
    StoreError,
    StoreNotFound,
    UnreadableFile,
)

DEFAULT_STORE = "/tmp/modelops/provenance"


def default_store_url() -> str:
    return os.environ.get("JOBLEDGER_STORE") or os.environ.get("MODELOPS_STORAGE_DIR") or DEFAULT_STORE


def normalize_store_url(url: str | None) -> str:
    """A stable form to record in the ledger: local paths become absolute; URLs are kept. Every store
    URL passes here before it is used or recorded, so this is where a SAS token is refused."""
    url = refuse_sas(url or default_store_url(), "store", StoreError)
    if not url.isprintable():
        raise StoreError(f"store {url!r} contains control characters")
    if url.startswith(("az://", "https://", "http://")):
        return url
    if url.startswith("file://"):
        return "file://" + str(Path(os.path.expanduser(url[len("file://"):])).resolve())
    return str(Path(os.path.expanduser(url)).resolve())


# Store URL scheme → the class that opens it, imported on first use (like DVC's known_implementations):
# the Azure SDK is only loaded for Azure stores. A path without a scheme is a local directory.
KNOWN_IMPLEMENTATIONS: dict[str, str] = {
    "file": "jobledger.stores.local:LocalStore",
    "az": "jobledger.stores.azure:AzureStore",
    "https": "jobledger.stores.azure:AzureStore",
    "http": "jobledger.stores.azure:AzureStore",  # emulators such as Azurite
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(url: str | None) -> ProvenanceStore:
    """The store behind a URL: a local path or ``file://`` URL, ``az://CONTAINER/PREFIX``, or
    ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`` (``http://`` for Azurite)."""
    scheme = _SCHEME.match(url or "")
    name = scheme.group(1).lower() if scheme else "file"
    target = KNOWN_IMPLEMENTATIONS.get(name)
    if target is None:
        raise StoreError(f"unsupported store URL {redact_url(url or '')!r} (use a path, file://, az:// or https://)")
    module, _, class_name = target.partition(":")
    store_class = getattr(importlib.import_module(module), class_name)
    return store_class.from_url(normalize_store_url(url))


__all__ = ["MAX_RESULT_BYTES", "MAX_ARTIFACT_BYTES", "ProvenanceStore", "StoreError", "StoreNotFound",
           "UnreadableFile", "KNOWN_IMPLEMENTATIONS", "open_store", "normalize_store_url",
           "default_store_url", "DEFAULT_STORE"]
