"""``jobs/<job_id>/state.json``: the ModelOps JobState document ⇄ ledger rows (pure functions, no I/O).

The document has exactly ModelOps's keys, so ModelOps readers parse it. Everything jobledger-specific
sits under ``metadata.jobledger`` (format marker, store, layout, seed policy, parent, side-blob keys,
counts) together with the status history, so that a status change and its history entry are one
compare-and-swap. A history entry is ``[from, to, at, reason, by]``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .. import states
from ..errors import shown
from ..paths import unsafe_reason
from ..timeutil import utcnow
from .base import RegistryError, check_fields, check_text

STATE_FORMAT = "jobledger-state/1"
MOVED_BY_MODELOPS = "moved by ModelOps"
# ModelOps's missing_outputs / verified_outputs list result paths; past this many the blob would grow with
# the job. missing_outputs stops here (the true count goes under metadata.jobledger), and verified_outputs
# is filled only when both lists together fit: 10,000 paths of ~70 bytes keep state.json under 1 MB.
PATH_LIST_CAP = 10_000

# The JobState fields ModelOps reads and writes, in its order (see the compat doc).
MODELOPS_KEYS = ("job_id", "status", "created_at", "updated_at", "k8s_name", "k8s_namespace", "k8s_uid",
                 "tasks_total", "tasks_completed", "error_message", "error_code", "results_path",
                 "expected_outputs", "verified_outputs", "missing_outputs", "tasks_verified",
                 "validation_started_at", "validation_completed_at", "validation_attempts",
                 "last_validation_error", "metadata")
STATE_TEXT_FIELDS = ("created_at", "updated_at", "k8s_name", "k8s_namespace", "k8s_uid", "error_message",
                     "error_code", "results_path", "validation_started_at", "validation_completed_at",
                     "last_validation_error")
STATE_COUNT_FIELDS = ("tasks_total", "tasks_completed", "tasks_verified", "validation_attempts")
# Job columns a status change or a pull carries over from the registry.
SHARED_COLUMNS = ("k8s_name", "k8s_namespace", "k8s_uid", "validation_started_at", "validation_completed_at",
                  "validation_attempts", "last_validation_error", "error_message", "error_code")
# Job columns jobledger keeps under metadata.jobledger.
OWN_COLUMNS = ("job_type", "bundle_ref", "runtime", "runtime_ref", "parent_job_id", "store_url", "layout",
               "seed_policy", "spec_format", "spec_sha256", "expected_total")


def state_key(job_id: str) -> str:
    return f"jobs/{job_id}/state.json"


def manifest_key(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.jsonl.gz"


def observed_key(job_id: str) -> str:
    return f"jobs/{job_id}/observed.json.gz"


def parse_state(data: bytes, key: str) -> dict:
    """A JobState document, checked enough that importing it cannot write nonsense."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{key}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{key}: not a JobState object (got {type(doc).__name__})")
    check_text(doc, data, key)
    for name in ("job_id", "status"):
        if not isinstance(doc.get(name), str):
            raise RegistryError(f"{key}: key {name!r} is missing or not a string")
    if doc["status"] not in states.STATUSES:
        raise RegistryError(f"{key}: key 'status' has unknown value {shown(doc['status'])}")
    # ModelOps's own types for the fields the ledger stores (JobState's str | None and int fields).
    check_fields(doc, key, text=STATE_TEXT_FIELDS, counts=STATE_COUNT_FIELDS)
    if state_key(doc["job_id"]) != key:
        raise RegistryError(f"{key}: key 'job_id' is {shown(doc['job_id'])}, which does not match the blob "
                            f"name")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise RegistryError(f"{key}: key 'metadata' is not an object")
    ours = (meta or {}).get("jobledger")
    if ours is not None:
        if not isinstance(ours, dict) or ours.get("format") != STATE_FORMAT:
            raise RegistryError(f"{key}: key 'metadata.jobledger' is not in format {STATE_FORMAT}")
        history = ours.get("transitions")
        if not isinstance(history, list) or not history or not all(
                isinstance(e, list) and len(e) == 5 and e[1] in states.STATUSES for e in history):
            raise RegistryError(f"{key}: key 'metadata.jobledger.transitions' is not a list of "
                                f"[from, to, at, reason, by] entries")
    return doc


def jobledger_part(doc: dict) -> dict | None:
    """The jobledger extras of a state document; None when ModelOps wrote it."""
    return (doc.get("metadata") or {}).get("jobledger")


def registry_history(doc: dict, local: list[list]) -> list[list]:
    """The job's status history as the registry tells it, comparable with this ledger's ``local`` one.

    A document jobledger wrote carries its history; a status that differs from its last entry is a
    move another writer (ModelOps's ``update_status``) made afterwards, in whatever direction: it is
    a fact, added as an entry of its own. A document only ModelOps wrote has no history: it agrees
    with the local one when it shows the local status or one the job went through on the way there
    (the ledger is ahead); any other status is a move ModelOps made from the local status.
    """
    status, at = doc["status"], doc.get("updated_at") or utcnow()
    ours = jobledger_part(doc)
    if ours:
        history = ours["transitions"]
        if history[-1][1] == status:
            return history
        return history + [[history[-1][1], status, at, MOVED_BY_MODELOPS, "ModelOps"]]
    if not local:
        return [[None, status, at, "imported from registry (written by ModelOps, no manifest)", None]]
    for i in range(len(local) - 1, -1, -1):
        if local[i][1] == status:
            return local[:i + 1]
    return local + [[local[-1][1], status, at, MOVED_BY_MODELOPS, "ModelOps"]]


def relation(local: list[list], remote: list[list]) -> str:
    """Whose history is ahead: same | local-ahead | remote-ahead | diverged, by the (from, to) moves."""
    a = [(e[0], e[1]) for e in local]
    b = [(e[0], e[1]) for e in remote]
    if a == b:
        return "same"
    if a[:len(b)] == b:
        return "local-ahead"
    if b[:len(a)] == a:
        return "remote-ahead"
    return "diverged"


def merged_history(mine: list[list], theirs: list[list]) -> list[list]:
    """The registry's entries for the moves both know (with who made them), then this ledger's newer ones."""
    return theirs + mine[len(theirs):]


def moved_message(doc: dict) -> str:
    ours = jobledger_part(doc)
    if ours:
        _, to, at, _, by = ours["transitions"][-1]
        return f"{by or 'another machine'} moved it to {to} at {at}"
    return f"ModelOps has it as {doc['status']} (updated {doc.get('updated_at')})"


@dataclass
class Progress:
    """What validation found, in ModelOps's terms: counts and the result paths ModelOps lists."""
    counts: dict                   # expected, verified, missing, errored, incomplete
    unverified_paths: list[str]    # the first PATH_LIST_CAP not-verified outputs, in ledger order
    verified_paths: list[str]      # every verified output, or [] when both lists would pass PATH_LIST_CAP
    observed: bool = True          # jobledger looked at the store (not only at the paths ModelOps reported)

    @property
    def unverified(self) -> int:
        return self.counts["expected"] - self.counts["verified"]

    @property
    def capped(self) -> bool:
        return len(self.unverified_paths) + len(self.verified_paths) < self.counts["expected"]


def make_progress(counts: dict, unverified_paths: Iterable[str], verified_paths: Iterable[str], *,
                  observed: bool = True) -> Progress:
    """Progress from counts and (lazily read) path lists, listing at most PATH_LIST_CAP paths in all."""
    unverified = list(islice(unverified_paths, PATH_LIST_CAP))
    room = PATH_LIST_CAP - len(unverified)
    verified = list(islice(verified_paths, room + 1))
    return Progress(dict(counts), unverified, verified if len(verified) <= room else [], observed)


def build_state(job: dict, progress: Progress, history: list[list], base: dict | None = None) -> dict:
    """The JobState document of a job row (with its progress and status history).

    ``base`` is the document in the registry: keys jobledger does not own (and metadata keys another
    writer merged in) are kept. For a job jobledger validates (it has a spec), ModelOps's progress
    fields say what the last validation found; for a job known only from ModelOps they stay ModelOps's.
    """
    counts = progress.counts
    user_meta = json.loads(job["metadata"]) if job.get("metadata") else {}
    has_manifest = job.get("spec_format") is not None
    ours = {"format": STATE_FORMAT, **{c: job.get(c) for c in OWN_COLUMNS},
            "counts": counts,
            "missing_outputs": {"total": progress.unverified,
                                "capped": len(progress.unverified_paths) < progress.unverified},
            "verified_outputs": {"total": counts["verified"],
                                 "capped": len(progress.verified_paths) < counts["verified"]},
            "manifest": manifest_key(job["job_id"]) if has_manifest else None,
            "observed": observed_key(job["job_id"]),
            "transitions": history}
    doc: dict[str, Any] = dict.fromkeys(MODELOPS_KEYS)
    doc.update({"tasks_total": job.get("tasks_total") or 0, "tasks_completed": 0, "tasks_verified": 0,
                "expected_outputs": [], "verified_outputs": [], "missing_outputs": []})
    doc.update(base or {})
    doc.update({"job_id": job["job_id"], "status": job["status"], "created_at": job["created_at"],
                "updated_at": job["updated_at"], "k8s_name": job.get("k8s_name"),
                "k8s_namespace": job.get("k8s_namespace"), "k8s_uid": job.get("k8s_uid"),
                "error_message": job.get("error_message"), "error_code": job.get("error_code"),
                "validation_started_at": job.get("validation_started_at"),
                "validation_completed_at": job.get("validation_completed_at"),
                "validation_attempts": job.get("validation_attempts") or 0,
                "last_validation_error": job.get("last_validation_error")})
    if has_manifest:
        doc.update({"tasks_total": counts["expected"], "tasks_verified": counts["verified"],
                    # outputs whose worker finished: a result.json, with or without an error
                    "tasks_completed": counts["verified"] + counts["errored"],
                    "results_path": job.get("store_url"),
                    # ModelOps lists OutputSpecs here; jobledger keeps them in the manifest side blob.
                    "expected_outputs": []})
        if job.get("validation_completed_at"):  # before the first validation nothing was looked at
            doc.update({"verified_outputs": progress.verified_paths,
                        "missing_outputs": progress.unverified_paths})
    elif progress.observed and not progress.capped:
        # A job known only from ModelOps that jobledger validated: its verdict over the paths ModelOps
        # reported, as ModelOps writes a verdict (the lists are all the job's known outputs here, so they
        # are written only when nothing would be cut off).
        doc.update({"tasks_verified": counts["verified"], "verified_outputs": progress.verified_paths,
                    "missing_outputs": progress.unverified_paths})
    meta: dict = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    doc["metadata"] = {**{k: v for k, v in meta.items() if k != "jobledger"}, **user_meta, "jobledger": ours}
    return {key: doc[key] for key in MODELOPS_KEYS} | {k: v for k, v in doc.items() if k not in MODELOPS_KEYS}


# The fields that say what a validation found (see build_state).
PROGRESS_KEYS = ("tasks_total", "tasks_verified", "tasks_completed", "verified_outputs", "missing_outputs")
OWN_PROGRESS_KEYS = ("counts", "missing_outputs", "verified_outputs")


def with_progress_of(doc: dict, other: dict) -> dict:
    """``doc`` with the progress fields (ModelOps's and jobledger's counts) of ``other``."""
    ours = {**(jobledger_part(doc) or {}),
            **{k: v for k, v in (jobledger_part(other) or {}).items() if k in OWN_PROGRESS_KEYS}}
    out = {**doc, **{k: other.get(k) for k in PROGRESS_KEYS if k in other}}
    out["metadata"] = {**(doc.get("metadata") or {}), "jobledger": ours}
    return out


def encode_state(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, default=str).encode()


def state_columns(doc: dict) -> dict:
    """The job columns a document sets when its status and history are imported."""
    columns = {"status": doc["status"], "updated_at": doc.get("updated_at") or utcnow(),
               **{c: doc.get(c) for c in SHARED_COLUMNS}}
    columns["validation_attempts"] = columns["validation_attempts"] or 0
    ours = jobledger_part(doc)
    if ours:
        columns["runtime_ref"] = ours.get("runtime_ref")
    elif doc.get("k8s_name"):
        columns["runtime"] = "k8s"  # ModelOps runs every job it creates as a Kubernetes Job
    meta = doc.get("metadata") or {}
    columns["metadata"] = json.dumps({k: v for k, v in meta.items() if k != "jobledger"})
    return columns


def reported_paths(doc: dict) -> tuple[list[str], list[str]]:
    """The result paths ModelOps's last validation listed: (verified, missing); jobledger keeps them as the
    expected outputs of a job it has no spec for."""
    lists = []
    for name in ("verified_outputs", "missing_outputs"):
        value = doc.get(name) or []
        # Paths from another machine: only those that stay inside the store are kept.
        lists.append([p for p in value if unsafe_reason(p) is None] if isinstance(value, list) else [])
    return lists[0], lists[1]


def foreign_job_columns(doc: dict) -> dict:
    """The columns of a job ModelOps created (no manifest): what its state document tells."""
    ours = jobledger_part(doc) or {}
    job_id = doc["job_id"]
    return {"job_id": job_id, "job_type": "calibration" if job_id.startswith("calib-") else "simulation",
            "bundle_ref": ours.get("bundle_ref"), "runtime": "k8s" if doc.get("k8s_name") else None,
            "parent_job_id": None,
            "store_url": doc.get("results_path"), "layout": ours.get("layout") or "token",
            "seed_policy": ours.get("seed_policy") or "runner", "spec_format": None, "spec_sha256": None,
            "tasks_total": doc.get("tasks_total") or 0, "expected_total": 0,
            "created_at": doc.get("created_at") or doc.get("updated_at") or utcnow(),
            "metadata": json.dumps({k: v for k, v in (doc.get("metadata") or {}).items()
                                    if k != "jobledger"})}


def counts_of(doc: dict) -> dict | None:
    return (jobledger_part(doc) or {}).get("counts")


def comparable(doc: dict) -> dict:
    """A state document without the fields that differ only in who wrote it."""
    out = dict(doc)
    meta = dict(out.get("metadata") or {})
    ours = dict(meta.get("jobledger") or {})
    ours["transitions"] = [e[:4] for e in ours.get("transitions", [])]
    meta["jobledger"] = ours
    out["metadata"] = meta
    return out
