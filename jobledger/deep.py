"""Deep checks (``validate --deep``): read the files of outputs the listing called verified or
errored, and demote those whose contents contradict it (wrong metadata, a missing or resized
artifact, with ``--checksums`` a BLAKE2b mismatch)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .layout import METADATA_FILE, RESULT_FILE, artifact_file
from .ledger import Ledger
from .paths import unsafe_reason
from .stores import MAX_ARTIFACT_BYTES, MAX_RESULT_BYTES, ProvenanceStore, StoreNotFound, UnreadableFile

READ_THREADS = 16


_ABSENT = object()


def _read_json(store: ProvenanceStore, directory: str, name: str) -> tuple[Any, tuple[str, str] | None]:
    """(document, None), or (_ABSENT or None, (state, reason)) when the file is absent, unreadable or
    not a JSON object."""
    try:
        doc = json.loads(store.read(f"{directory}/{name}", MAX_RESULT_BYTES))
    except StoreNotFound:
        return _ABSENT, ("errored", f"{name} is missing")
    except UnreadableFile as exc:
        return None, ("errored", str(exc)[:500])
    except (ValueError, RecursionError):
        return None, ("errored", f"{name} is not valid JSON")
    if not isinstance(doc, dict):
        return None, ("errored", f"{name} is not a JSON object")
    return doc, None


def _deep_check(store: ProvenanceStore, row: dict, checksums: bool) -> tuple[str, str] | None:
    """(state, reason) when reading the files contradicts the listing's verdict, else None."""
    path = row["path"]
    result, problem = _read_json(store, path, RESULT_FILE)
    if problem:
        return ("incomplete", "result.json disappeared during validation") if result is _ABSENT else problem
    error = result.get("error") if isinstance(result, dict) else None
    if row["state"] == "errored" or error:
        if isinstance(error, dict):
            kind, message = error.get("error_type", "Error"), error.get("message", "")
            return "errored", f"worker error: {kind}: {message}"[:500]
        return ("errored", "the worker wrote error_details.arrow") if row["state"] == "errored" else \
            ("errored", "result.json reports an error")
    if not isinstance(result, dict) or not isinstance(result.get("outputs"), dict):
        return "errored", "result.json has no 'outputs' object"
    if row["kind"] == "simulation":
        meta, problem = _read_json(store, path, METADATA_FILE)
        if problem:
            return problem
        # A result path ModelOps reported (no spec) has no known param_id or entrypoint, only its seed.
        if row["param_id"] and meta.get("param_id") != row["param_id"]:
            return "errored", f"metadata.json param_id {str(meta.get('param_id'))[:16]}… is not the " \
                              f"expected " \
                              f"{row['param_id'][:16]}…"
        if row["entrypoint"] and meta.get("entrypoint") != row["entrypoint"]:
            return "errored", (f"metadata.json entrypoint {meta.get('entrypoint')!r} is not "
                               f"{row['entrypoint']!r}")
        if row["run_seed"] is not None and str(meta.get("seed")) != str(row["run_seed"]):
            return "errored", f"metadata.json seed {meta.get('seed')} is not {row['run_seed']}"
    declared = json.loads(row["outputs"]) if row["outputs"] else None
    if declared:
        absent = sorted(set(declared) - set(result["outputs"]))
        if absent:
            return "errored", f"result.json lacks declared output(s) {', '.join(absent)}"
    sizes = dict(store.list(path + "/"))
    for name, info in sorted(result["outputs"].items()):
        if unsafe_reason(name) or "/" in name:
            return "errored", f"result.json names an output {name[:40]!r} that is no file name"
        file = artifact_file(name)
        size = sizes.get(f"{path}/{file}")
        if size is None:
            return "errored", f"{file} is missing"
        if isinstance(info, dict) and info.get("size") is not None and size != info["size"]:
            return "errored", f"{file} is {size} bytes, result.json says {info['size']}"
        if checksums and isinstance(info, dict) and info.get("checksum"):
            try:
                if store.checksum(f"{path}/{file}", MAX_ARTIFACT_BYTES) != info["checksum"]:
                    return "errored", f"{file} checksum does not match result.json"
            except UnreadableFile as exc:
                return "errored", str(exc)[:500]
    return None


def deep_check(ledger: Ledger, store: ProvenanceStore, *, checksums: bool, progress=None) -> int:
    """Read the files of verified (and errored) simulation outputs (aggregations: jobledger.aggregations);
    demote contradicted ones in ``observed``."""
    rows = ledger.query(
        "SELECT obs.output_id, obs.state, e.path, e.output_type AS kind, e.param_id, e.entrypoint, "
        "e.outputs, e.run_seed FROM observed obs JOIN expected_outputs e ON e.output_id = obs.output_id "
        "WHERE obs.state IN ('verified', 'errored') AND e.output_type = 'simulation'")
    if not rows:
        return 0

    def check(row: dict):
        found = _deep_check(store, row, checksums)
        if progress is not None:
            progress.advance(1)
        return None if found is None else (found[0], found[1], row["output_id"])

    with ThreadPoolExecutor(READ_THREADS) as pool:
        changes = [c for c in pool.map(check, rows) if c is not None]
    ledger.conn.executemany("UPDATE observed SET state = ?, detail = ? WHERE output_id = ?", changes)
    return len(changes)


__all__ = ["deep_check"]
