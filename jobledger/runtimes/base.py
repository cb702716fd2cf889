"""What every runtime is: the ``Runtime`` base class, the phases a runtime observes, its errors.

Backends (``kubernetes.py``, ``local.py``) import this module, not the package, so the package's
name → class table can name them without an import cycle.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..contracts import SimJob
from ..errors import JobledgerError

# What a runtime can observe about one job.
PENDING = "pending"      # accepted, no work started yet (Job without pods)
ACTIVE = "active"        # work in progress (a retry after failed pods included)
SUCCEEDED = "succeeded"  # the runtime says it finished; the artifacts decide whether it did
FAILED = "failed"        # the runtime gave up (Failed condition, worker exit status != 0)
GONE = "gone"            # the runtime no longer knows the job (404, process and record vanished)
ELSEWHERE = "elsewhere"  # only another machine can see the work (a local worker on another host)
PHASES = (PENDING, ACTIVE, SUCCEEDED, FAILED, GONE, ELSEWHERE)


class RuntimeFailure(JobledgerError):
    """A runtime refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class RuntimeStatus:
    phase: str
    reason: str | None = None   # machine-readable, e.g. BackoffLimitExceeded
    message: str | None = None  # human-readable detail


@dataclass
class Submission:
    """What a runtime created for a job: ledger columns to record with ``scheduled``."""
    runtime_ref: dict[str, Any]
    columns: dict[str, Any] = field(default_factory=dict)


class Runtime:
    """Base class of runtimes. ``describe``, ``submit``, ``status`` and ``cancel`` must be provided;
    ``check`` (nothing to refuse) and ``withdraw`` (cancel) have defaults."""

    name: str = ""
    # where the runtime places jobs (a Kubernetes namespace), if it has such a thing
    namespace: str | None = None

    def check(self, job: SimJob, job_row: dict) -> None:
        """Refuse, before anything is recorded, a submission that cannot work (bad store, no credentials)."""

    def describe(self, job: SimJob, job_row: dict) -> dict:
        """What submit would create (for --dry-run), without creating anything."""
        raise NotImplementedError

    def submit(self, job: SimJob, job_row: dict, expected: list[dict]) -> Submission:
        """Start the job. On failure, remove whatever this call created, then raise."""
        raise NotImplementedError

    def withdraw(self, job_row: dict) -> None:
        """Undo a submit whose ledger record could not be completed."""
        self.cancel(job_row)

    def recover(self, job_row: dict) -> Submission | None:
        """What a submit of this job that was interrupted (the CLI killed mid-submit) left running
        in the runtime, as that submit would have recorded it; None when the runtime has nothing."""
        return None

    def status(self, job_rows: Iterable[dict]) -> dict[str, RuntimeStatus]:
        """The observed phase of each job (keyed by job_id), in as few calls as possible."""
        raise NotImplementedError

    def cancel(self, job_row: dict) -> None:
        """Stop the job's work; a job that is already gone is not an error."""
        raise NotImplementedError

    def logs(self, job_row: dict, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The job's log as text chunks: its last ``tail`` lines (all without), then, with
        ``follow``, what is written until the job's process ends."""
        raise RuntimeFailure(f"the {self.name or type(self).__name__} runtime keeps no logs")
