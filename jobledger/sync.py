"""Between the ledger and the runtimes: submit, sync (runtime status → transitions → validation), cancel.

What a runtime observes maps onto the state machine as follows (``sync``):

| runtime says                         | ledger moves to                                  |
| ------------------------------------ | ------------------------------------------------ |
| pending (Job without pods yet)       | stays ``scheduled``                              |
| active (retries included)            | ``running``                                      |
| succeeded (Complete, worker exit 0)  | ``validating``, then validation decides          |
| failed (Failed condition, exit != 0) | ``failed`` with the reason                       |
| gone (404 after the TTL, vanished)   | ``validating``: the artifacts decide, not the 404 |
| elsewhere (another host's worker)    | unchanged: that host decides (a registry brings its verdict) |

A job left in ``submitting`` (the CLI killed mid-submit) is asked of its runtime: if the runtime
has it, it is ``scheduled`` as that submit would have recorded it; if not, and the submit began
longer ago than a timeout, it is ``failed`` ("submit interrupted") and may be submitted again.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import states
from .contracts import SimJob
from .errors import JobledgerError
from .jobrows import StoredSpec
from .ledger import Ledger, LedgerError
from .limits import SUBMIT_TIMEOUT
from .registration import create_job
from .registry import MovedElsewhere
from .registry.transfer import pull
from .runtimes import ACTIVE, ELSEWHERE, FAILED, GONE, PENDING, SUCCEEDED, RuntimeStatus, open_runtime
from .runtimes.local import runs_dir_for
from .stores import normalize_store_url
from .timeutil import seconds_since
from .validation import validate_job

RUNTIME_OPTIONS = {"local": ("runs_dir", "bundle_path"),
                   "k8s": ("namespace", "context", "kubeconfig", "image", "bundle_registry",
                           "service_account", "postgres_secret")}
SYNCED = (states.SUBMITTING, states.SCHEDULED, states.RUNNING, states.VALIDATING)
OBSERVED = (states.SCHEDULED, states.RUNNING)

# Simulation rows in the order the worker should run them, with what it needs to run each.
EXPECTED_TASKS_SQL = """
SELECT e.path, e.run_seed, e.task_seed, e.param_id, p.params_json, e.bundle_ref, e.entrypoint, e.outputs
FROM expected_outputs e JOIN params p USING (param_id)
WHERE e.job_id = ? AND e.output_type = 'simulation' ORDER BY e.output_id
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

@dataclass(frozen=True)
class Submitted:
    """A job registered for a runtime and (unless only registered) started on it."""
    job_id: str
    expected: int
    runtime: str
    parent_job_id: str | None
    status: str
    warnings: list[str] = field(default_factory=list)
    runtime_ref: dict | None = None   # the runtime's handle (Job name, run directory); None until submitted
    bundle_ref: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def submit_job(ledger: Ledger, job: SimJob, spec: StoredSpec, spec_format: str, *, runtime: str,
               store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
               parent_job_id: str | None = None, runtime_options: dict | None = None,
               reason: str = "submitted", submit: bool = True, progress: Callable[[int], None] | None = None,
               on_total: Callable[[int], None] | None = None) -> Submitted:
    """Register ``job`` and start it: pending → submitting → scheduled. ``on_total``/``progress`` follow
    the registration (see registration.create_job).

    A failure while submitting leaves the job ``failed`` with the error (the runtime removes
    what it created) and re-raises. ``submit=False`` only registers it (``pending``).
    """
    rt = runtime_for(ledger.path, runtime, runtime_options)
    namespace = rt.namespace
    if submit:
        rt.check(job, {"job_id": job.job_id, "store_url": normalize_store_url(store),
                       "layout": layout or "token",
                       "k8s_namespace": namespace})
    registered = create_job(ledger, job, spec, spec_format, status=states.PENDING, reason=reason,
                            store=store,
                            layout=layout, seed_policy=seed_policy, runtime=runtime, namespace=namespace,
                            k8s_name=job.job_id if runtime == "k8s" else None, parent_job_id=parent_job_id,
                            progress=progress, on_total=on_total)
    again = not registered.created and states.may_resubmit(registered.status,
                                                            ledger.job(job.job_id)["error_code"])
    if not registered.created and registered.status != states.PENDING and not again:
        raise LedgerError(f"{job.job_id} is already {registered.status}: it was submitted before")
    pending = Submitted(job.job_id, registered.expected, runtime, parent_job_id, registered.status,
                        list(registered.warnings), bundle_ref=job.bundle_ref)
    if not submit:
        return pending
    row = ledger.transition(job.job_id, states.SUBMITTING,
                            f"submitting to {runtime} again (the runtime took nothing before)" if again
                            else f"submitting to {runtime}", resubmit=again)
    try:
        submission = rt.submit(job, row, ledger.query(EXPECTED_TASKS_SQL, (job.job_id,)))
    except BaseException as exc:
        ledger.transition(job.job_id, states.FAILED, f"submit failed: {exc}", error_message=str(exc),
                          error_code=states.SUBMIT_FAILED)
        ledger.notify_changed(job.job_id)
        if isinstance(exc, JobledgerError):
            raise JobledgerError(f"{job.job_id}: submit failed: {exc}") from None
        raise
    ref = json.dumps(submission.runtime_ref)
    try:
        row = ledger.transition(job.job_id, states.SCHEDULED, f"submitted to {runtime}", runtime_ref=ref,
                                error_message=None, error_code=None, **submission.columns)
    except BaseException as exc:
        rt.withdraw({**row, "runtime_ref": ref, **submission.columns})  # no orphaned Job, blob or worker
        ledger.transition(job.job_id, states.FAILED, f"submit failed: {exc}", error_message=str(exc),
                          error_code=states.SUBMIT_FAILED)
        ledger.notify_changed(job.job_id)
        raise
    ledger.notify_changed(job.job_id)
    return replace(pending, status=row["status"], runtime_ref=submission.runtime_ref)


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


@dataclass(frozen=True)
class SyncChange:
    """What ``sync`` did to one job: the statuses it went through (``path``) and, when the job
    was validated (or another machine's verdict imported), the output counts."""
    job_id: str
    from_status: str
    path: tuple[str, ...]
    to: str
    runtime: str | None
    observed: str | None          # the runtime's phase, None when it was not asked
    reason: str | None = None
    error: str | None = None
    dry_run: bool = False
    note: str | None = None        # why an unchanged job stays as it is (another host runs it, ...)
    expected: int | None = None
    verified: int | None = None
    missing: int | None = None
    errored: int | None = None
    incomplete: int | None = None
    stale: int | None = None

    @property
    def changed(self) -> bool:
        return len(self.path) > 1

    @property
    def validated(self) -> bool:
        return self.verified is not None

    def as_dict(self) -> dict:
        """The ``sync --json`` object: the same keys for every job, whatever happened to it."""
        doc = asdict(self)
        doc["from"] = doc.pop("from_status")
        doc["path"] = list(self.path)
        order = ("job_id", "from", "path", "to", "runtime", "observed", "reason", "error", "note", "changed",
                 "dry_run", *COUNT_KEYS)
        return {key: self.changed if key == "changed" else doc[key] for key in order}


COUNT_KEYS = ("expected", "verified", "missing", "errored", "incomplete", "stale")


@dataclass
class _Steps:
    """What happened to one job so far (kept while a sync of it is in flight)."""
    path: list[str]
    reason: str | None = None
    error: str | None = None
    note: str | None = None
    counts: dict = field(default_factory=dict)
    published: bool = False  # a validation of this step published the job after its last change


def sync(ledger: Ledger, job_ids: Iterable[str] | None = None, *, validate: bool = True,
         dry_run: bool = False, runtime_options: dict | None = None,
         submit_timeout: float = SUBMIT_TIMEOUT, progress: Callable[[int], None] | None = None,
         on_total: Callable[[int], None] | None = None) -> list[SyncChange]:
    """Bring every unfinished job (or those named) up to date with its runtime, and validate the
    ones that finished; recover jobs left in ``submitting`` (see the module docstring). Returns one
    SyncChange per job looked at. ``on_total(jobs)`` then ``progress(1)`` per job are told how far
    it is."""
    names = list(job_ids or [])
    if names:
        rows = [ledger.job(job_id) for job_id in dict.fromkeys(names)]
    else:
        marks = ",".join("?" * len(SYNCED))
        rows = ledger.query(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, job_id",
                            SYNCED)
    if on_total is not None:
        on_total(len(rows))
    observed, errors = _observe(ledger, [r for r in rows if r["status"] in OBSERVED and r["runtime"]],
                                runtime_options)
    changes = []
    for row in rows:
        if row["status"] == states.SUBMITTING and row["runtime"]:
            changes.append(_recover_submit(ledger, row, runtime_options, submit_timeout, dry_run))
        else:
            changes.append(_sync_one(ledger, row, observed.get(row["job_id"]), errors.get(row["job_id"]),
                                     validate, dry_run))
        if progress is not None:
            progress(1)
    return changes


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
              dry_run: bool) -> SyncChange:
    job_id, current = row["job_id"], row["status"]
    steps = _Steps([current], error=error)
    if observed is not None and observed.phase == ELSEWHERE:
        # Another host runs it: only that host decides. A registry may already hold its verdict.
        steps.note = observed.message
        if ledger.mirror is not None and not dry_run:
            try:
                pull(ledger, [job_id])
            except JobledgerError as exc:
                steps.error = str(exc)
            if ledger.job(job_id)["status"] != current:
                current = ledger.job(job_id)["status"]
                steps.path.append(current)
                steps.reason = f"decided by the host that runs it ({observed.message})"
                steps.counts = ledger.summary(job_id)
    elif not error and current in SYNCED:
        try:
            current = _advance(ledger, row, observed, steps, validate, dry_run)
        except MovedElsewhere as moved:
            # Another machine synced this job first: take its verdict rather than fail.
            pull(ledger, [job_id])
            current = ledger.job(job_id)["status"]
            steps.path.append(current)
            steps.reason = f"already moved to {moved.remote_status} by another machine"
            steps.counts = ledger.summary(job_id)
        except states.IllegalTransition:
            # Another process on this ledger moved the job between our read and our write: its move
            # stands, and this sync reports it instead of failing.
            now = ledger.job(job_id)["status"]
            if now == current:
                raise
            current = now
            steps.path.append(now)
            steps.reason = f"already moved to {now} by another process"
            steps.counts = ledger.summary(job_id)
        if row["runtime"] is None and current in OBSERVED:
            steps.note = f"no runtime to ask: `jobledger validate {job_id}` decides it from the artifacts"
    return _change(ledger, row, steps, current, observed, dry_run)


def _change(ledger: Ledger, row: dict, steps: _Steps, current: str, observed: RuntimeStatus | None,
            dry_run: bool) -> SyncChange:
    job_id = row["job_id"]
    change = SyncChange(job_id, row["status"], tuple(steps.path), current, row["runtime"],
                        observed.phase if observed else None, steps.reason, steps.error, dry_run, steps.note,
                        **{k: steps.counts[k] for k in COUNT_KEYS if k in steps.counts})
    if change.changed and not dry_run and not steps.published:
        ledger.notify_changed(job_id)
    return change


def _recover_submit(ledger: Ledger, row: dict, options: dict | None, timeout: float,
                    dry_run: bool) -> SyncChange:
    """A job left in ``submitting``: scheduled when its runtime has it; failed ("submit interrupted",
    which may be submitted again) when the runtime has nothing and the submit began over ``timeout``
    seconds ago; left alone otherwise (a submit may still be under way)."""
    job_id, runtime = row["job_id"], row["runtime"]
    steps = _Steps([row["status"]])
    age = seconds_since(row["updated_at"])
    try:
        found = runtime_for(ledger.path, runtime, options).recover(row)
    except JobledgerError as exc:
        steps.error = str(exc)
        return _change(ledger, row, steps, row["status"], None, dry_run)
    if found is not None:
        steps.reason = f"submit interrupted, but {runtime} has the job: recovered by sync"
        if not dry_run:
            ledger.transition(job_id, states.SCHEDULED, steps.reason,
                              runtime_ref=json.dumps(found.runtime_ref), error_message=None, error_code=None,
                              **found.columns)
        steps.path.append(states.SCHEDULED)
    elif age >= timeout:
        steps.reason = (f"submit interrupted: {runtime} has no record of the job {age:.0f} s after the "
                        f"submit began; it may be submitted again")
        if not dry_run:
            ledger.transition(job_id, states.FAILED, steps.reason, error_message=steps.reason,
                              error_code=states.SUBMIT_INTERRUPTED)
        steps.path.append(states.FAILED)
    else:
        steps.note = (f"submitting for {age:.0f} s and {runtime} has no record of it yet: a submit may "
                      f"still be under way (after {timeout:.0f} s sync calls it interrupted)")
    return _change(ledger, row, steps, steps.path[-1], None, dry_run)


def _advance(ledger: Ledger, row: dict, observed: RuntimeStatus | None, steps: _Steps, validate: bool,
             dry_run: bool) -> str:
    """Apply what the runtime reports, then validate a job that reached ``validating``."""
    job_id, current = row["job_id"], row["status"]
    target = _target(current, observed) if observed else None
    if target and observed:
        reason = _reason(observed, row["runtime"])
        steps.reason = reason
        if not dry_run:
            failure: dict[str, Any] = {}
            if target == states.FAILED:
                failure = {"error_message": observed.message or observed.reason,
                           "error_code": observed.reason}
            ledger.transition(job_id, target, reason, **failure)
        steps.path.append(target)
        current = target
    if current == states.VALIDATING and validate:
        if dry_run:
            steps.path.append("(validate)")
        else:
            try:
                # a move this step made swapped state.json already: no need to read it again
                result = validate_job(ledger, job_id, reason=steps.reason, in_step=target is not None)
            except MovedElsewhere:
                raise
            except JobledgerError as exc:  # e.g. a job ModelOps created, with no outputs known: it stays
                steps.error = str(exc)       # validating, and the error says how to give it its spec
            else:
                if result.status != current:
                    steps.path.append(result.status)
                current = result.status
                steps.counts = {k: getattr(result, k) for k in COUNT_KEYS}
                steps.published = result.validated  # a recorded validation ends by publishing the job
    return current


# ------------------------------------------------------------------ cancel

@dataclass(frozen=True)
class Cancelled:
    """What ``cancel`` did: ``stopped`` when a runtime was told to stop the work."""
    job_id: str
    previous_status: str
    status: str
    stopped: bool
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def cancel_job(ledger: Ledger, job_id: str, *, runtime_options: dict | None = None) -> Cancelled:
    """Stop a job's work and mark it ``cancelled``; a cancelled job is left as it is."""
    row = ledger.job(job_id)
    status = row["status"]
    if status == states.CANCELLED:
        return Cancelled(job_id, status, status, False, "already cancelled: nothing to do")
    if status in states.TERMINAL:
        raise LedgerError(f"{job_id} is {status}: only an unfinished job can be cancelled")
    note = None
    if not row["runtime"]:
        note = "recorded only: jobledger does not run this job, so nothing was stopped"
    elif status == states.PENDING:
        note = "it was never submitted, so nothing was stopped"
    else:
        runtime_for(ledger.path, row["runtime"], runtime_options).cancel(row)
    why = "cancelled by the user" + (f" ({note})" if note else "")
    row = ledger.transition(job_id, states.CANCELLED, why)
    ledger.notify_changed(job_id)
    return Cancelled(job_id, status, row["status"], note is None, note)


__all__ = ["submit_job", "Submitted", "preview_submission", "sync", "SyncChange", "cancel_job", "Cancelled",
           "SUBMIT_TIMEOUT", "runtime_for",
           "EXPECTED_TASKS_SQL"]
