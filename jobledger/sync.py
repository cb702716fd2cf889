"""Between the ledger and the runtimes: submit, sync (runtime status → transitions → validation), cancel.

What a runtime observes maps onto the state machine as follows (``sync``):

| runtime says                         | ledger moves to                                  |
| ------------------------------------ | ------------------------------------------------ |
| pending (Job without pods yet)       | stays ``scheduled``                              |
| active (retries included)            | ``running``                                      |
| succeeded (Complete, worker exit 0)  | ``validating``, then validation decides          |
| failed (Failed condition, exit != 0) | ``failed`` with the reason                       |
| gone (404 after the TTL, vanished)   | ``validating``: the artifacts decide, not the 404 |
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from . import states
from .contracts import SimJob
from .errors import JobledgerError
from .ledger import Ledger, LedgerError
from .registry import MovedElsewhere
from .runtimes import ACTIVE, FAILED, GONE, PENDING, SUCCEEDED, RuntimeStatus, open_runtime
from .runtimes.local import runs_dir_for
from .stores import normalize_store_url

RUNTIME_OPTIONS = {"local": ("runs_dir", "bundle_path"),
                   "k8s": ("namespace", "context", "kubeconfig", "image", "bundle_registry",
                           "service_account", "postgres_secret")}
SYNCED = (states.SCHEDULED, states.RUNNING, states.VALIDATING)
OBSERVED = (states.SCHEDULED, states.RUNNING)

# Simulation rows in the order the worker should run them, with what it needs to run each.
EXPECTED_TASKS_SQL = """
SELECT o.path, o.run_seed, o.task_seed, p.param_id, p.params_json, t.bundle_ref, t.entrypoint, t.outputs
FROM outputs o JOIN params p ON p.param_key = o.param_key JOIN task_templates t ON t.template_id = o.template_id
WHERE o.job_id = ? AND o.kind = 'simulation' ORDER BY o.output_id
"""


def runtime_for(ledger_path: Path, name: str, options: dict | None = None):
    """Open a runtime with the options that concern it; the local runtime keeps its runs beside the ledger."""
    allowed = RUNTIME_OPTIONS.get(name, ())
    kwargs = {k: v for k, v in (options or {}).items() if k in allowed and v is not None}
    if name == "local":
        kwargs.setdefault("runs_dir", runs_dir_for(ledger_path))
    return open_runtime(name, **kwargs)


def preview_submission(ledger_path: Path, job: SimJob, *, runtime: str, store: str | None = None,
                       layout: str | None = None, runtime_options: dict | None = None) -> dict:
    """What ``submit`` would upload and create, without touching the ledger or the runtime."""
    rt = runtime_for(ledger_path, runtime, runtime_options)
    row = {"job_id": job.job_id, "store_url": normalize_store_url(store), "layout": layout or "token",
           "k8s_namespace": rt.namespace}
    return {"spec": job.to_json(), **rt.describe(job, row)}


# ------------------------------------------------------------------ submit

def submit_job(ledger: Ledger, job: SimJob, spec_doc: Any, spec_format: str, *, runtime: str,
               store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
               parent_job_id: str | None = None, runtime_options: dict | None = None,
               reason: str = "submitted", submit: bool = True) -> dict:
    """Register ``job`` and start it: pending → submitting → scheduled.

    A failure while submitting leaves the job ``failed`` with the error (the runtime removes
    what it created) and re-raises. ``submit=False`` only registers it (``pending``).
    """
    rt = runtime_for(ledger.path, runtime, runtime_options)
    namespace = rt.namespace
    if submit:
        rt.check(job, {"job_id": job.job_id, "store_url": normalize_store_url(store), "layout": layout or "token",
                       "k8s_namespace": namespace})
    from .api import create_job
    registered = create_job(ledger, job, spec_doc, spec_format, status=states.PENDING, reason=reason, store=store,
                            layout=layout, seed_policy=seed_policy, runtime=runtime, namespace=namespace,
                            k8s_name=job.job_id if runtime == "k8s" else None, parent_job_id=parent_job_id)
    if not registered.created and registered.status != states.PENDING:
        raise LedgerError(f"{job.job_id} is already {registered.status}: it was submitted before")
    result = {"job_id": job.job_id, "expected": registered.expected, "runtime": runtime,
              "parent_job_id": parent_job_id, "status": states.PENDING, "warnings": registered.warnings}
    if not submit:
        return result
    row = ledger.transition(job.job_id, states.SUBMITTING, f"submitting to {runtime}")
    try:
        submission = rt.submit(job, row, ledger.query(EXPECTED_TASKS_SQL, (job.job_id,)))
    except BaseException as exc:
        ledger.transition(job.job_id, states.FAILED, f"submit failed: {exc}", error_message=str(exc),
                          error_code="SubmitFailed")
        ledger.notify_changed(job.job_id)
        if isinstance(exc, JobledgerError):
            raise JobledgerError(f"{job.job_id}: submit failed: {exc}") from None
        raise
    ref = json.dumps(submission.runtime_ref)
    try:
        row = ledger.transition(job.job_id, states.SCHEDULED, f"submitted to {runtime}", runtime_ref=ref,
                                **submission.columns)
    except BaseException as exc:
        rt.withdraw({**row, "runtime_ref": ref, **submission.columns})  # no orphaned Job, blob or worker
        ledger.transition(job.job_id, states.FAILED, f"submit failed: {exc}", error_message=str(exc),
                          error_code="SubmitFailed")
        ledger.notify_changed(job.job_id)
        raise
    ledger.notify_changed(job.job_id)
    return {**result, "status": row["status"], "runtime_ref": submission.runtime_ref}


# ------------------------------------------------------------------ sync

def _target(current: str, observed: RuntimeStatus) -> str | None:
    """The status a job moves to for what its runtime reports (None: no change)."""
    if observed.phase == ACTIVE:
        return states.RUNNING if current == states.SCHEDULED else None
    if observed.phase in (SUCCEEDED, GONE):
        return states.VALIDATING
    if observed.phase == FAILED:
        return states.FAILED
    return None  # PENDING: nothing has started


def _reason(observed: RuntimeStatus, runtime: str) -> str:
    words = {ACTIVE: "running", SUCCEEDED: "finished", FAILED: "failed", GONE: "gone", PENDING: "pending"}
    text = f"{runtime}: {words[observed.phase]}"
    if observed.reason:
        text += f" ({observed.reason})"
    if observed.message:
        text += f": {observed.message}"
    if observed.phase == GONE:
        text += "; deciding by artifacts"
    return text


def sync(ledger: Ledger, job_ids: Iterable[str] | None = None, *, validate: bool = True, dry_run: bool = False,
         runtime_options: dict | None = None) -> list[dict]:
    """Bring every unfinished job (or those named) up to date with its runtime, and validate the
    ones that finished. Returns one record per job looked at, with ``changed`` and the status path."""
    names = list(job_ids or [])
    if names:
        rows = [ledger.job(job_id) for job_id in dict.fromkeys(names)]
    else:
        marks = ",".join("?" * len(SYNCED))
        rows = ledger.query(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, job_id", SYNCED)
    observed, errors = _observe(ledger, [r for r in rows if r["status"] in OBSERVED and r["runtime"]],
                                runtime_options)
    return [_sync_one(ledger, row, observed.get(row["job_id"]), errors.get(row["job_id"]), validate, dry_run)
            for row in rows]


def _observe(ledger: Ledger, rows: list[dict], options: dict | None) -> tuple[dict, dict]:
    """Ask each runtime once for all its jobs; a runtime that cannot answer marks its jobs with the error."""
    by_runtime: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_runtime[row["runtime"]].append(row)
    observed: dict[str, RuntimeStatus] = {}
    errors: dict[str, str] = {}
    for name, group in by_runtime.items():
        try:
            observed.update(runtime_for(ledger.path, name, options).status(group))
        except JobledgerError as exc:
            errors.update((row["job_id"], str(exc)) for row in group)
    return observed, errors


def _sync_one(ledger: Ledger, row: dict, observed: RuntimeStatus | None, error: str | None, validate: bool,
              dry_run: bool) -> dict:
    job_id, current = row["job_id"], row["status"]
    record: dict[str, Any] = {"job_id": job_id, "from": current, "path": [current], "to": current,
                              "runtime": row["runtime"], "observed": observed.phase if observed else None,
                              "reason": None, "error": error, "changed": False, "dry_run": dry_run}
    if error or current not in SYNCED:
        return record
    try:
        current = _advance(ledger, row, observed, record, validate, dry_run)
    except MovedElsewhere as moved:
        # Another machine synced this job first: take its verdict rather than fail.
        from .registry.mirror import pull
        pull(ledger, [job_id])
        current = ledger.job(job_id)["status"]
        record["path"].append(current)
        record["reason"] = f"already moved to {moved.remote_status} by another machine"
        record.update(ledger.summary(job_id))
    record["to"] = current
    record["changed"] = len(record["path"]) > 1
    if record["changed"] and not dry_run:
        ledger.notify_changed(job_id)
    return record


def _advance(ledger: Ledger, row: dict, observed: RuntimeStatus | None, record: dict, validate: bool,
             dry_run: bool) -> str:
    """Apply what the runtime reports, then validate a job that reached ``validating``."""
    job_id, current = row["job_id"], row["status"]
    target = _target(current, observed) if observed else None
    if target:
        reason = _reason(observed, row["runtime"])
        record["reason"] = reason
        if not dry_run:
            fields = {}
            if target == states.FAILED:
                fields = {"error_message": observed.message or observed.reason, "error_code": observed.reason}
            ledger.transition(job_id, target, reason, **fields)
        record["path"].append(target)
        current = target
    if current == states.VALIDATING and validate:
        if dry_run:
            record["path"].append("(validate)")
        else:
            from .validation import validate_job
            try:
                result = validate_job(ledger, job_id, reason=record["reason"])
                if result["status"] != current:  # a job without a spec is not validated: it stays validating
                    record["path"].append(result["status"])
                current = result["status"]
                record.update({k: result[k] for k in ("expected", "verified", "missing", "errored", "incomplete")})
            except MovedElsewhere:
                raise
            except JobledgerError as exc:
                record["error"] = str(exc)
    return current


def describe_change(record: dict) -> str:
    """``job-…: running → validating → partial (18 verified, 7 missing)``."""
    line = f"{record['job_id']}: {' → '.join(record['path'])}"
    if "verified" in record:
        counts = [f"{record['verified']} verified"] + [f"{record[k]} {k}" for k in ("missing", "errored", "incomplete")
                                                         if record.get(k)]
        line += f" ({', '.join(counts)})"
    elif record["to"] == states.FAILED and record.get("reason"):
        line += f" ({record['reason']})"
    if record.get("error"):
        line += f" [error: {record['error']}]"
    return line


# ------------------------------------------------------------------ cancel

def cancel_job(ledger: Ledger, job_id: str, *, runtime_options: dict | None = None) -> dict:
    """Stop a job's work and mark it ``cancelled``."""
    row = ledger.job(job_id)
    states.check_transition(row["status"], states.CANCELLED)
    if row["runtime"] and row["status"] != states.PENDING:
        runtime_for(ledger.path, row["runtime"], runtime_options).cancel(row)
    row = ledger.transition(job_id, states.CANCELLED, "cancelled by the user")
    ledger.notify_changed(job_id)
    return row


__all__ = ["submit_job", "preview_submission", "sync", "cancel_job", "describe_change", "runtime_for", "EXPECTED_TASKS_SQL"]
