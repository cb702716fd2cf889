"""Provenance stores: where workers' result files live (a directory, or Azure Blob)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "/tmp/modelops/provenance"


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
