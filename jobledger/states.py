"""Job statuses (the values ModelOps stores) and the legal moves between them."""
from __future__ import annotations

from .errors import JobledgerError

PENDING, SUBMITTING, SCHEDULED, RUNNING = "pending", "submitting", "scheduled", "running"
VALIDATING, SUCCEEDED, PARTIAL, FAILED, CANCELLED = "validating", "succeeded", "partial", "failed", "cancelled"

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

# Observed state of one expected output.
OUTPUT_STATES = ("verified", "missing", "errored", "incomplete")


class IllegalTransition(JobledgerError, ValueError):
    pass


def check_transition(current: str, target: str, *, revalidate: bool = False) -> None:
    if target not in STATUSES:
        raise IllegalTransition(f"unknown status {target!r}")
    if current not in STATUSES:
        raise IllegalTransition(f"unknown current status {current!r}")
    if target in TRANSITIONS[current]:
        return
    if revalidate and current in REVALIDATABLE and target == VALIDATING:
        return
    hint = " (use an explicit re-validation, e.g. validate --force)" if current in REVALIDATABLE and target == VALIDATING else ""
    raise IllegalTransition(f"illegal transition {current} → {target}{hint}")


def is_legal(current: str, target: str, *, revalidate: bool = False) -> bool:
    try:
        check_transition(current, target, revalidate=revalidate)
        return True
    except IllegalTransition:
        return False


def verdict(expected: int, verified: int) -> str:
    """validating → succeeded / partial / failed from the counts."""
    if expected and verified == expected:
        return SUCCEEDED
    return PARTIAL if verified else FAILED
