"""Job statuses (the values ModelOps stores) and the legal moves between them."""
from __future__ import annotations

from .errors import JobledgerError

PENDING, SUBMITTING, SCHEDULED, RUNNING = "pending", "submitting", "scheduled", "running"
VALIDATING, SUCCEEDED, PARTIAL, FAILED = "validating", "succeeded", "partial", "failed"
CANCELLED = "cancelled"

STATUSES = (PENDING, SUBMITTING, SCHEDULED, RUNNING, VALIDATING, SUCCEEDED, PARTIAL, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, PARTIAL, FAILED, CANCELLED})
ACTIVE = frozenset(STATUSES) - TERMINAL

TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({SUBMITTING, SCHEDULED, CANCELLED}),
    SUBMITTING: frozenset({SCHEDULED, FAILED}),
    SCHEDULED: frozenset({RUNNING, VALIDATING, FAILED, CANCELLED}),
    RUNNING: frozenset({VALIDATING, FAILED, CANCELLED}),
    VALIDATING: frozenset({SUCCEEDED, PARTIAL, FAILED}),
    SUCCEEDED: frozenset(),
    PARTIAL: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
# Only an explicit re-validation may reopen a finished verdict; cancelled is final.
REVALIDATABLE = frozenset({SUCCEEDED, PARTIAL, FAILED})
# ``validate --force`` decides any job from its artifacts now, whatever its runtime last said:
# every status but cancelled (final) may move to validating on that explicit request.
FORCE_DECIDABLE = frozenset(STATUSES) - {CANCELLED, VALIDATING}

# Why a submit failed when the runtime had accepted nothing: such a job may be submitted again
# (failed → submitting). Any other failure happened while the job ran, and resume is the way on.
SUBMIT_FAILED, SUBMIT_INTERRUPTED = "SubmitFailed", "SubmitInterrupted"
RESUBMITTABLE_ERRORS = frozenset({SUBMIT_FAILED, SUBMIT_INTERRUPTED})

# State of one expected output: unchecked until a validation observed it, then what it saw. 'stale'
# is an aggregation whose directory aggregates other inputs than the param set's current, verified
# replicates (see jobledger.aggregations).
UNCHECKED = "unchecked"
OUTPUT_STATES = ("verified", "missing", "errored", "incomplete", "stale")  # what a validation can observe


class IllegalTransition(JobledgerError, ValueError):
    pass


def check_transition(current: str, target: str, *, revalidate: bool = False, resubmit: bool = False) -> None:
    """Refuse a move the state machine does not allow. ``revalidate``: an explicit request to decide
    the job from its artifacts (validate --force); ``resubmit``: submitting again a job whose submit
    failed before the runtime accepted anything (see ``may_resubmit``)."""
    if target not in STATUSES:
        raise IllegalTransition(f"unknown status {target!r}")
    if current not in STATUSES:
        raise IllegalTransition(f"unknown current status {current!r}")
    if target in TRANSITIONS[current]:
        return
    if revalidate and target == VALIDATING and current in FORCE_DECIDABLE:
        return
    if resubmit and current == FAILED and target == SUBMITTING:
        return
    hint = ""
    if current in REVALIDATABLE and target == VALIDATING:
        hint = " (use an explicit re-validation, e.g. validate --force)"
    raise IllegalTransition(f"illegal transition {current} → {target}{hint}")


def is_legal(current: str, target: str, *, revalidate: bool = False, resubmit: bool = False) -> bool:
    try:
        check_transition(current, target, revalidate=revalidate, resubmit=resubmit)
        return True
    except IllegalTransition:
        return False


def may_resubmit(status: str, error_code: str | None) -> bool:
    """A failed job may be submitted again when its submit failed before the runtime took it."""
    return status == FAILED and error_code in RESUBMITTABLE_ERRORS


def verdict(expected: int, verified: int) -> str:
    """validating → succeeded / partial / failed from the counts."""
    if expected and verified == expected:
        return SUCCEEDED
    return PARTIAL if verified else FAILED
