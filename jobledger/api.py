"""The facade (like DVC's ``Repo``): one function per command, returning typed results.

The CLI calls these and renders what they return, nothing else; a Python user gets every
command from ``from jobledger import api``. Nothing inside the package imports this module:
dependencies point from here down to the domain modules.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import states
from .contracts import ContractError
from .errors import JobledgerError
from .idempotent import IdempotentSimulationService
from .ledger import Ledger, LedgerError, default_path
from .registration import Forgotten, Registered, create_job, forget, prepare_job, read_spec, register
from .registry import open_mirror
from .registry.mirror import pull as pull_jobs
from .registry.mirror import push as push_jobs
from .resume import MAX_ATTEMPTS, RESUME_REASONS, Pruned, Resumed, ResumePlan, plan_resume, prune_spec, resume
from .resume import check_reasons as check_resume_reasons
from .sync import SUBMIT_TIMEOUT, Cancelled, Submitted, SyncChange, cancel_job, preview_submission, submit_job
from .sync import sync as sync_jobs
from .timeutil import parse_since, utcnow
from .validation import Plan, ValidationResult, validate_job
from .validation import explain as explain_validation


def ledger_path(path: str | Path | None) -> Path:
    """Where the ledger is: ``path``, else $JOBLEDGER_DB, else the XDG data directory."""
    return Path(path).expanduser() if path else default_path()


def open_ledger(path: str | Path | None = None, *, registry: str | None = None,
                readonly: bool = False) -> Ledger:
    """The ledger, mirrored to ``registry`` (when given) for every status change it writes."""
    mirror = open_mirror(registry) if registry and not readonly else None
    return Ledger(path, readonly=readonly, mirror=mirror)


# ------------------------------------------------------------------ reads

STATUS_FIELDS = ("job_id", "status", "job_type", "bundle_ref", "runtime", "k8s_name", "k8s_namespace",
                 "parent_job_id", "store_url", "layout", "seed_policy", "tasks_total", "created_at",
                 "updated_at", "validation_attempts", "error_message", "last_validation_error")
COUNT_FIELDS = ("expected", "verified", "missing", "errored", "incomplete", "stale", "unchecked", "given_up")


@dataclass(frozen=True)
class JobStatus:
    """One job as ``status`` shows it: its row, output counts, last validation, param sets, resume tree."""
    job: dict                       # the STATUS_FIELDS of the jobs row
    counts: dict                    # COUNT_FIELDS and pct_verified, from the job_summary view
    validated: bool                 # has any validation observed the job's outputs?
    last_validation: dict | None
    param_sets: list[dict]          # param_id, expected, verified (simulation outputs)
    lineage: list[dict]             # descendants: job_id, parent_job_id, depth (1 = child), status, counts

    def as_dict(self) -> dict:
        """The ``status --json`` contract."""
        return {**self.job, **self.counts, "validated": self.validated,
                "last_validation": self.last_validation, "param_sets": self.param_sets,
                "lineage": self.lineage}


def status(ledger: Ledger, job_id: str) -> JobStatus:
    job = ledger.job(job_id)
    counts = ledger.query(f"SELECT {', '.join(COUNT_FIELDS)}, pct_verified FROM job_summary WHERE job_id = ?",
                          (job_id,))[0]
    runs = ledger.query("SELECT run_id, started_at, finished_at, strategy, requests, verified, missing, "
                        "errored, incomplete, unexpected, outcome, error FROM validation_runs "
                        "WHERE job_id = ? ORDER BY run_id DESC LIMIT 1", (job_id,))
    param_sets = ledger.query(
        "SELECT param_id, count(*) AS expected, sum(state = 'verified') AS verified FROM expected_outputs "
        "WHERE job_id = ? AND output_type = 'simulation' GROUP BY param_id ORDER BY min(output_id)",
        (job_id,))
    return JobStatus({k: job[k] for k in STATUS_FIELDS}, counts, bool(runs), runs[0] if runs else None,
                     param_sets,
                     _descendants(ledger, job_id))


def counts(ledger: Ledger, job_id: str) -> dict:
    """expected / verified / missing / errored / incomplete / stale of one job."""
    return ledger.summary(job_id)


def _descendants(ledger: Ledger, job_id: str) -> list[dict]:
    """The resume tree below ``job_id`` from the ``job_lineage`` view, depth counted from ``job_id``."""
    rows = ledger.query(
        "SELECT l.job_id, l.parent_job_id, l.depth - me.depth AS depth, l.status, s.expected, s.verified "
        "FROM job_lineage me JOIN job_lineage l ON l.root_job_id = me.root_job_id AND l.depth > me.depth "
        "JOIN job_summary s ON s.job_id = l.job_id WHERE me.job_id = ? ORDER BY l.depth, l.job_id", (job_id,))
    below, tree = {job_id}, []
    for row in rows:  # ordered by depth: a parent is seen before its children
        if row["parent_job_id"] in below:
            below.add(row["job_id"])
            tree.append(row)
    return tree


def list_jobs(ledger: Ledger, *, status: str | None = None, since: str | None = None,
              limit: int | None = None) -> list[dict]:
    if status and status not in states.STATUSES:
        raise ContractError(f"--status: {status!r} is not one of {', '.join(states.STATUSES)}")
    return ledger.list_jobs(status, parse_since(since) if since else None, limit)


# Why an output is listed by ``missing``: what a validation saw, or that none has looked yet.
MISSING_REASONS = tuple(s for s in states.OUTPUT_STATES if s != "verified") + (states.UNCHECKED,)


def missing(ledger: Ledger, job_id: str, *, reason: str | None = None,
            limit: int | None = None) -> list[dict]:
    """Expected outputs not verified, with why ('unchecked' until a validation observed them)."""
    if reason and reason not in MISSING_REASONS:
        raise ContractError(f"--reason: {reason!r} is not one of {', '.join(MISSING_REASONS)}")
    return ledger.unverified(job_id, reason, limit)


def history(ledger: Ledger, job_id: str) -> list[dict]:
    return ledger.transitions(job_id)


def run_sql(ledger_path: str | Path | None, query: str) -> tuple[list[str], list[tuple]]:
    """Run an ad-hoc query on a read-only connection: writes are refused by SQLite itself."""
    ledger = Ledger(ledger_path, readonly=True)
    try:
        cursor = ledger.conn.execute(query)
        columns = [d[0] for d in cursor.description or ()]
        return columns, [tuple(r) for r in cursor.fetchall()]
    except sqlite3.Error as exc:
        raise LedgerError(f"sql: {exc}") from None
    finally:
        ledger.close()


# ------------------------------------------------------------------ runs

def submit(ledger: Ledger, spec: Any, *, runtime: str, bundle: str | None = None, job_id: str | None = None,
           store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
           runtime_options: dict | None = None) -> Submitted:
    """Register a spec (a path, '-' or a document) and start it on ``runtime``."""
    job, doc, fmt = prepare_job(read_spec(spec) if isinstance(spec, (str, Path)) else spec, bundle=bundle,
                                job_id=job_id)
    return submit_job(ledger, job, doc, fmt, runtime=runtime, store=store, layout=layout,
                      seed_policy=seed_policy,
                      runtime_options=runtime_options, reason=f"submitted with {runtime}")


def preview(ledger_file: str | Path | None, spec: Any, *, runtime: str, bundle: str | None = None,
            job_id: str | None = None, store: str | None = None, layout: str | None = None,
            runtime_options: dict | None = None) -> dict:
    """What ``submit`` would upload and create (the spec and the runtime's objects); changes nothing."""
    job, _, _ = prepare_job(read_spec(spec) if isinstance(spec, (str, Path)) else spec, bundle=bundle,
                            job_id=job_id)
    return preview_submission(ledger_path(ledger_file), job, runtime=runtime, store=store, layout=layout,
                              runtime_options=runtime_options)


def prune(spec: Any, store: str, *, bundle: str | None = None, layout: str = "token",
          seed_policy: str = "runner") -> Pruned:
    return prune_spec(read_spec(spec) if isinstance(spec, (str, Path)) else spec, store, bundle=bundle,
                      layout=layout, seed_policy=seed_policy)


__all__ = ["ledger_path", "open_ledger", "read_spec", "register", "forget", "create_job", "prepare_job",
           "status", "counts", "list_jobs", "missing", "history", "run_sql", "submit", "preview", "prune",
           "parse_since", "utcnow", "validate_job", "explain_validation", "pull_jobs", "push_jobs",
           "IdempotentSimulationService", "prune_spec", "plan_resume", "resume", "submit_job", "sync_jobs",
           "cancel_job", "Registered", "Forgotten", "JobStatus", "ValidationResult", "Plan", "SyncChange",
           "Submitted", "Cancelled", "ResumePlan", "Resumed", "Pruned", "JobledgerError", "MISSING_REASONS",
           "SUBMIT_TIMEOUT", "MAX_ATTEMPTS", "RESUME_REASONS", "check_resume_reasons"]
