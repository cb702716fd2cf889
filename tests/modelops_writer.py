"""What ModelOps's own code does to a ``jobs/<id>/state.json`` blob, for tests (modelops 06153e8).

``update_status`` follows ``JobRegistry.update_status`` as the compat notes describe it: a compare-and-swap
on the blob; from a terminal status it raises unless the new status is the same; it sets exactly
``status`` and ``updated_at`` (now, ISO with ``+00:00``) plus the keyword fields it is given, and
merges a given ``metadata`` dict into the existing one (shallow ``update``). The document goes
through ``JobState.from_dict`` / ``to_dict`` on the way, so unknown top-level keys are dropped and
the 21 keys are written in ModelOps's order; everything else (``metadata.jobledger`` included) is
left as it was. ``JOBSTATE_TYPES`` are the field types ``JobState.from_dict`` expects.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

TERMINAL = {"succeeded", "partial", "failed", "cancelled"}
UPDATABLE = {"error_message", "error_code", "results_path", "tasks_completed", "tasks_total", "k8s_uid",
             "validation_started_at", "validation_completed_at", "validation_attempts", "last_validation_error",
             "tasks_verified", "verified_outputs", "missing_outputs"}

STR, OPT_STR, INT = (str,), (str, type(None)), (int,)
JOBSTATE_TYPES = {
    "job_id": STR, "status": STR, "created_at": STR, "updated_at": STR,
    "k8s_name": OPT_STR, "k8s_namespace": OPT_STR, "k8s_uid": OPT_STR,
    "tasks_total": INT, "tasks_completed": INT, "tasks_verified": INT, "validation_attempts": INT,
    "error_message": OPT_STR, "error_code": OPT_STR, "results_path": OPT_STR, "validation_started_at": OPT_STR,
    "validation_completed_at": OPT_STR, "last_validation_error": OPT_STR,
    "expected_outputs": (list,), "verified_outputs": (list,), "missing_outputs": (list,), "metadata": (dict,),
}
STATUSES = ("pending", "submitting", "scheduled", "running", "validating", "succeeded", "partial", "failed",
            "cancelled")


def from_dict(doc: dict) -> dict:
    """``JobState.from_dict``: unknown keys dropped; every field must have ModelOps's type."""
    state = {key: doc.get(key) for key in JOBSTATE_TYPES}
    for key, types in JOBSTATE_TYPES.items():
        value = state[key]
        # bool is an int in Python but not in ModelOps's dataclass
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise TypeError(f"JobState.{key}: {type(value).__name__} {value!r} is not {types}")
    assert state["status"] in STATUSES, state["status"]
    assert all(isinstance(p, str) for p in state["verified_outputs"] + state["missing_outputs"])
    assert all(isinstance(spec, dict) for spec in state["expected_outputs"])
    return state


def update_status(store, job_id: str, new_status: str, **fields) -> dict:
    """``JobRegistry.update_status(job_id, new_status, **fields)`` on a VersionedStore; returns the new doc."""
    bad = set(fields) - UPDATABLE - {"metadata"}
    if bad:
        raise TypeError(f"update_status does not take {sorted(bad)}")
    key = f"jobs/{job_id}/state.json"
    for _ in range(20):
        data, version = store.get(key)
        state = from_dict(json.loads(data))
        if state["status"] in TERMINAL and new_status != state["status"]:
            raise ValueError(f"Cannot transition from terminal state {state['status']} to {new_status}")
        state["status"] = new_status
        state["updated_at"] = datetime.now(UTC).isoformat()
        for name, value in fields.items():
            if name == "metadata":
                state["metadata"].update(value)
            else:
                state[name] = value
        if store.put(key, json.dumps(state, indent=2).encode(), version):
            return state
    raise RuntimeError(f"{key}: still changing")
