"""Artifact-driven validation: plan how to look at the store (validation_plan.py), observe every
expected output, record what changed, then decide the job's status.

Strategies: ``scan`` (scan.py: the walk stops at each directory holding expected outputs, whose
marker files are probed, in worker processes; the default for a local store), ``list`` and ``head``
(observe.py: a walk of the layout's prefixes, or a read of each output's directory, streamed into
``temp.listing`` and classified with one SQL join; for object stores, and for jobs with targets,
whose aggregations are decided from the listing). The run row is written first, in a short
transaction of its own (a status move names it); the output states that changed, their events,
unexpected directories and the status transition then commit in one transaction (recording.py). A
store error before that leaves the ledger unchanged, and so does a registry that refuses the move
(the run row is taken out again).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from . import aggregations, states
from .deep import deep_check
from .ledger import Ledger, SpecNeeded, utcnow
from .limits import READ_TIMEOUT
from .observe import classify, observe, unexpected_from_listing
from .recording import (
    data_version,
    drop_observation,
    insert_run,
    new_observation,
    observed_counts,
    others_wrote,
    record_run,
)
from .recording import progress as run_progress
from .redact import redact_url
from .registry.transfer import refresh
from .scan import PACKED_STATE_SQL, Scan, scan
from .stores import ProvenanceStore, open_store
from .validation_plan import STRATEGIES, Plan, ValidationError, check_strategy, job_to_check, make_plan

OUTCOMES = {states.SUCCEEDED: "complete", states.PARTIAL: "partial", states.FAILED: "failed",
            states.CANCELLED: "cancelled"}
# Why a job with nothing to wait for is decided at once (registered without runtime coordinates).
NO_RUNTIME_REASON = "no runtime: decided from the artifacts"


# ---------------------------------------------------------------- observe

def _observe(ledger: Ledger, job: dict, store: ProvenanceStore, plan: Plan, *, deep: bool, checksums: bool,
             read_timeout: float | None = READ_TIMEOUT, progress=None) -> tuple[Scan | None, dict]:
    """Fill ``temp.observed`` and ``temp.unexpected`` (see recording) by the plan's strategy. Returns the
    scan (None for the listing strategies) and the counts of every state."""
    job_id = job["job_id"]
    conn = ledger.conn
    conn.execute("DROP TABLE IF EXISTS temp.claimed")
    conn.execute("CREATE TEMP TABLE claimed (listing_row INTEGER PRIMARY KEY)")
    scanned = None
    if plan.strategy == "scan":
        scanned = scan(str(ledger.path), job_id, store, plan.parts, expected=plan.expected)
        if progress is not None:
            progress.advance(plan.expected)
        new_observation(ledger)
        _load_scan(ledger, scanned, everything=deep)  # --deep reads every verified and errored output
        _unexpected_from_scan(ledger, job, scanned)
    else:
        observe(ledger, job_id, store, plan, progress)
        classify(ledger, job_id)
    if deep:
        deep_check(ledger, store, checksums=checksums, progress=progress, read_timeout=read_timeout)
    if plan.strategy != "scan":
        # after the replicates they aggregate
        aggregations.classify(ledger, job, store, plan.target_dirs, deep=deep, read_timeout=read_timeout)
        if plan.strategy == "list":
            unexpected_from_listing(ledger, job)
    counts = scanned.counts if scanned is not None and not deep else observed_counts(ledger)
    return scanned, counts


def _load_scan(ledger: Ledger, scanned: Scan, *, everything: bool) -> None:
    """The scan's changed outputs (every output with ``everything``) into ``temp.observed``."""
    conn = ledger.conn
    conn.execute("DELETE FROM temp.observed")
    for text in scanned.packed_json(everything=everything):
        conn.execute(f"INSERT INTO temp.observed (output_id, state) SELECT value >> 3, {PACKED_STATE_SQL} "
                     f"FROM json_each(?)", (text,))
    conn.executemany("UPDATE temp.observed SET detail = ? WHERE output_id = ?", scanned.details())


def _unexpected_from_scan(ledger: Ledger, job: dict, scanned: Scan) -> None:
    """The scan's strays, but for those another job of the same store expects (jobs share a store)."""
    conn = ledger.conn
    conn.executemany("INSERT OR IGNORE INTO temp.unexpected (path) VALUES (?)",
                     ((path,) for path in scanned.unexpected))
    if scanned.unexpected:
        conn.execute("DELETE FROM temp.unexpected WHERE path IN (SELECT o.path FROM manifest o "
                     "WHERE o.job_id IN (SELECT job_id FROM jobs WHERE store_url IS ? AND job_id <> ?))",
                     (job["store_url"], job["job_id"]))


@dataclass(frozen=True)
class ValidationResult:
    """The ``validate --json`` object: the same keys whether or not the job was re-validated."""
    job_id: str
    status: str
    previous_status: str
    outcome: str                 # complete | partial | failed | cancelled | in-progress | skipped
    expected: int
    verified: int
    missing: int
    errored: int
    incomplete: int
    stale: int                   # aggregations over other inputs than their param set's current replicates
    unexpected: int | None       # None: not looked for (head strategy, or no run yet)
    strategy: str | None         # None when the job was not re-validated
    requests: int
    seconds: float
    run_id: int | None           # this run; None when the job was not re-validated
    last_run_id: int | None      # the job's latest run (this one when validated)
    changed: int                 # outputs whose state this run changed
    transitioned: bool
    validated: bool
    deep: bool
    checksums: bool
    store: str
    prefixes: list[str]
    note: str | None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def exit_code(self) -> int:
        return exit_status(self.expected, self.verified)


def exit_status(expected: int, verified: int) -> int:
    """0 every expected output verified (or nothing to verify), 3 some not verified, 4 none verified."""
    if not expected or verified == expected:
        return 0
    return 3 if verified else 4


def _stored_result(ledger: Ledger, job: dict, note: str, seconds: float) -> ValidationResult:
    """What the ledger already knows, for jobs that are not re-validated."""
    counts = ledger.summary(job["job_id"])
    last = ledger.query("SELECT run_id, unexpected FROM validation_runs WHERE job_id = ? "
                        "ORDER BY run_id DESC LIMIT 1", (job["job_id"],))
    outcome = OUTCOMES.get(job["status"], "skipped" if not counts["expected"] else "in-progress")
    return ValidationResult(
        job["job_id"], job["status"], job["status"], outcome, counts["expected"], counts["verified"],
        counts["missing"], counts["errored"], counts["incomplete"], counts["stale"],
        last[0]["unexpected"] if last else None,
        strategy=None, requests=0, seconds=round(seconds, 3), run_id=None,
        last_run_id=last[0]["run_id"] if last else None, changed=0, transitioned=False, validated=False,
        deep=False, checksums=False, store=redact_url(job["store_url"] or ""), prefixes=[], note=note)


def _opening_reason(ledger: Ledger, job: dict, force: bool, reason: str | None) -> str | None:
    """Why this validation moves the job to ``validating`` to decide it, or None when it only observes
    (a job whose runtime is still to be heard from; a cancelled job, whose status is final)."""
    status = job["status"]
    if status in (states.VALIDATING, states.CANCELLED):
        return None
    if status in states.TERMINAL:
        return reason or f"re-validation requested (--force) after {status}"
    if job["runtime"] is None and status == states.SCHEDULED:
        # Registered as run elsewhere and nothing has reported on it since: nothing to wait for. (A job
        # without runtime that is running was moved so by ModelOps through a registry: it reports.)
        return NO_RUNTIME_REASON
    if not force:
        return None
    last = ledger.query("SELECT reason FROM transitions WHERE job_id = ? ORDER BY transition_id DESC LIMIT 1",
                        (job["job_id"],))
    said = last[0]["reason"] if last and last[0]["reason"] else "nothing"
    return (f"decided from the artifacts on request (validate --force) while {status}; "
            f"the runtime last said: {said}")


def validate_job(ledger: Ledger, job_id: str, *, force: bool = False, strategy: str = "auto",
                 deep: bool = False, checksums: bool = False, read_timeout: float | None = READ_TIMEOUT,
                 progress=None, reason: str | None = None, in_step: bool = False) -> ValidationResult:
    """Validate a job against its store and decide succeeded/partial/failed for a job in
    ``validating``, a job without runtime (nothing to wait for), and with ``force`` any job but a
    cancelled one. A job whose runtime is still to be heard from, and a cancelled job (cancelled
    is final), are only observed; a finished job keeps its verdict unless ``force``.
    ``progress.advance(n)`` (optional) is told how many directories or outputs were looked at.
    ``read_timeout``: seconds one file read (a deep check's, an aggregation's) may take (None: no limit).
    ``in_step``: the caller has just swapped the job's status with the registry (sync), so this ledger
    holds what the registry holds and the state.json read that starts a validation is skipped."""
    clock = time.monotonic()
    if not in_step:
        refresh(ledger, job_id)
    job = job_to_check(ledger, job_id)
    check_strategy(strategy)  # before anything is read or written (make_plan comes later)
    deep = deep or checksums
    status = job["status"]
    if status in states.TERMINAL and status != states.CANCELLED and not force:
        return _stored_result(ledger, job, f"{job_id} is {status}; its status is kept (use --force to "
                                           f"re-validate)", time.monotonic() - clock)
    has_outputs = ledger.conn.execute("SELECT 1 FROM outputs WHERE job_id = ? LIMIT 1", (job_id,)).fetchone()
    note = None
    if job["spec_format"] is None:
        # Known only from ModelOps's state.json: its rows are the result paths ModelOps's last validation
        # listed, the outputs we know of. With none, there is nothing to decide on: no verdict, say why.
        if not has_outputs:
            raise SpecNeeded(job_id, "no expected outputs known", "validate")
        note = (f"{job_id} has no spec (ModelOps created it): checked the result paths ModelOps reported, "
                f"in {redact_url(job['store_url'])}")
    elif not has_outputs:
        return _stored_result(ledger, job, f"{job_id} has no expected outputs: validation skipped, status "
                                           f"left at {status}", time.monotonic() - clock)
    opening = _opening_reason(ledger, job, force, reason)
    store = open_store(job["store_url"])
    plan = make_plan(ledger, job, store, strategy)
    started = utcnow()
    version = data_version(ledger)  # before the scan reads the ledger's states
    try:
        scanned, counts = _observe(ledger, job, store, plan, deep=deep, checksums=checksums,
                                   read_timeout=read_timeout, progress=progress)
        run = {"started_at": started, "store": plan.store, "strategy": plan.strategy, "deep": deep,
               "requests": store.requests}
        current = ledger.job(job_id)
        if current["status"] != status and current["status"] in states.TERMINAL and not force:
            # Another process decided it while this one listed the store: its verdict stands and is reported.
            return _stored_result(ledger, current,
                                  f"{job_id} became {current['status']} while it was being validated "
                                  "(another process decided it); this run was not recorded",
                                  time.monotonic() - clock)
        if current["status"] != status:
            opening = _opening_reason(ledger, current, force, reason)
        opened = False
        if opening is not None and current["status"] != states.VALIDATING:
            current = ledger.transition(job_id, states.VALIDATING, opening, revalidate=True)
            opened = True
        fields = dict(validation_attempts=current["validation_attempts"] + 1, validation_started_at=started,
                      validation_completed_at=utcnow(), last_validation_error=None)
        verdict = states.verdict(counts["expected"], counts["verified"]) \
            if current["status"] == states.VALIDATING else None
        outcome = OUTCOMES.get(verdict or "", "in-progress")
        unexpected_known = plan.strategy != "head"
        recorded: dict = {}

        def record(run_id: int) -> None:
            if scanned is not None and not deep and others_wrote(ledger, version):
                # Another process wrote to the ledger since the scan compared its observation with the
                # ledger's states: compare every output again, so that this run is recorded as a whole.
                _load_scan(ledger, scanned, everything=True)
            recorded.update(record_run(ledger, job_id, run_id, counts, unexpected_known=unexpected_known))

        if verdict is None:
            with ledger.transaction():
                run_id = insert_run(ledger, job_id, run, counts, unexpected_known=unexpected_known,
                                    outcome=outcome)
                record(run_id)
                ledger.update_job(job_id, **fields)
            final = ledger.job(job_id)
        else:
            # The move's reason names the run, and the reason is fixed before the registry swap: the run row
            # goes in first, in a short transaction of its own, so that the id named is the id stored even
            # when other validations write runs to this ledger meanwhile.
            with ledger.transaction():
                run_id = insert_run(ledger, job_id, run, counts, unexpected_known=unexpected_known,
                                    outcome=outcome)
            summary = (f"{counts['verified']}/{counts['expected']} verified, {counts['missing']} missing, "
                       f"{counts['errored']} errored, {counts['incomplete']} incomplete"
                       + (f", {counts['stale']} stale" if counts["stale"] else "") + f" (run {run_id})")
            try:
                final = ledger.transition(
                    job_id, verdict, f"validated: {summary}" + (f"; {reason}" if reason else ""),
                    with_writes=lambda: record(run_id),
                    # only a registry is told the paths (a query over every output of the job)
                    progress=run_progress(ledger, job_id, counts) if ledger.mirror is not None else None,
                    **fields)
            except BaseException as exc:
                # The registry refused or failed (or the move became illegal): keep nothing of this run.
                with ledger.transaction():
                    ledger.conn.execute("DELETE FROM validation_runs WHERE run_id = ?", (run_id,))
                now = ledger.job(job_id)
                if isinstance(exc, states.IllegalTransition) and now["status"] != current["status"]:
                    # Another process on this ledger decided the job first: report its verdict.
                    return _stored_result(ledger, now, f"{job_id} was decided by another process meanwhile "
                                                       f"({now['status']}); this run was not recorded",
                                          time.monotonic() - clock)
                raise
        outcome = OUTCOMES.get(final["status"], "in-progress")
    finally:
        drop_observation(ledger)
    ledger.notify_changed(job_id)
    return ValidationResult(
        job_id, final["status"], status, outcome, recorded["expected"], recorded["verified"],
        recorded["missing"], recorded["errored"], recorded["incomplete"], recorded["stale"],
        recorded["unexpected"],
        strategy=plan.strategy,
        requests=store.requests, seconds=round(time.monotonic() - clock, 3), run_id=recorded["run_id"],
        last_run_id=recorded["run_id"], changed=recorded["changed"],
        transitioned=opened or final["status"] != status,
        validated=True, deep=deep, checksums=checksums, store=plan.store, prefixes=plan.prefixes, note=note)


__all__ = ["validate_job", "ValidationResult", "exit_status", "make_plan", "deep_check", "Plan",
           "ValidationError", "STRATEGIES"]
