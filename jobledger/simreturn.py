"""SimReturn: what a ModelOps SimulationService hands back for a task, built from a stored result directory.

ModelOps code that consumes results (the runner's aggregation, Calabaria targets) expects
``modelops_contracts.SimReturn`` objects: ``task_id``, ``outputs`` (name → TableArtifact with
``size``, ``checksum`` and the bytes ``inline``, or a ``ref`` for big ones), ``error``
(ErrorInfo), ``error_details``, ``cached``. When ``modelops_contracts`` is importable its own
classes are used; otherwise the wire-compatible dataclasses below (same field names, order
and defaults, modelops-contracts 0.3.1).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .hashing import blake2b_hex
from .layout import ERROR_FILE, RESULT_FILE, artifact_file
from .stores import MAX_RESULT_BYTES, ProvenanceStore, UnreadableFile

INLINE_CAP = 524288  # modelops_contracts.artifacts.INLINE_CAP: bigger artifacts are passed by reference
ARROW = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class TableArtifact:
    content_type: str = ARROW
    size: int = 0
    inline: bytes | None = None
    ref: str | None = None
    checksum: str = ""


@dataclass(frozen=True)
class ErrorInfo:
    error_type: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class SimReturn:
    task_id: str
    outputs: Mapping[str, TableArtifact]
    error: ErrorInfo | None = None
    error_details: TableArtifact | None = None
    logs_ref: str | None = None
    metrics: Mapping[str, float] | None = None
    cached: bool = False


def contract_classes() -> tuple[Any, Any, Any]:
    """(SimReturn, TableArtifact, ErrorInfo): the real modelops_contracts classes when installed."""
    try:
        from modelops_contracts import ErrorInfo as RealErrorInfo  # type: ignore[import-not-found]
        from modelops_contracts import SimReturn as RealSimReturn
        from modelops_contracts import TableArtifact as RealTableArtifact
    except ImportError:
        return SimReturn, TableArtifact, ErrorInfo
    return RealSimReturn, RealTableArtifact, RealErrorInfo


def _artifact(store: ProvenanceStore, path: str, info: Any, table_artifact: Any) -> Any:
    declared = info if isinstance(info, Mapping) else {}
    size = declared.get("size")
    if size is None or size <= INLINE_CAP:
        try:
            data = store.read(path, INLINE_CAP)
        except UnreadableFile:
            pass  # bigger than result.json says: passed by reference like any big artifact
        else:
            checksum = declared.get("checksum") or blake2b_hex(data)
            return table_artifact(size=len(data), inline=data, checksum=checksum)
    return table_artifact(size=size, ref=path, checksum=declared.get("checksum") or "")


def sim_return_from_store(store: ProvenanceStore, directory: str, *, result: Mapping | None = None,
                          cached: bool = False) -> Any:
    """The SimReturn of the result in ``directory`` (its result.json, passed in when already read).

    Artifacts up to INLINE_CAP bytes are read and carried inline; bigger ones carry their
    store path as ``ref``, as ModelOps does for its content-addressed artifacts.
    """
    sim_return, table_artifact, error_info = contract_classes()
    if result is None:
        result = json.loads(store.read(f"{directory}/{RESULT_FILE}", MAX_RESULT_BYTES))
    outputs = {name: _artifact(store, f"{directory}/{artifact_file(name)}", info, table_artifact)
               for name, info in sorted((result.get("outputs") or {}).items())}
    error = details = None
    if isinstance(result.get("error"), Mapping):
        err = result["error"]
        error = error_info(error_type=str(err.get("error_type") or "Error"),
                           message=str(err.get("message") or ""), retryable=bool(err.get("retryable", False)))
        details = _artifact(store, f"{directory}/{ERROR_FILE}", result.get("error_details"), table_artifact)
    return sim_return(task_id=result["task_id"], outputs=outputs, error=error, error_details=details,
                      cached=cached)


__all__ = ["SimReturn", "TableArtifact", "ErrorInfo", "INLINE_CAP", "contract_classes",
           "sim_return_from_store"]
