"""The facade (like DVC's ``Repo``): one function per command, returning typed results.

The CLI calls these and renders what they return, nothing else; a Python user gets every
command from ``from jobledger import api``. Nothing inside the package imports this module:
dependencies point from here down to the domain modules.
"""
from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import states
from .contracts import ContractError, is_study
from .errors import JobledgerError
from .fileio import write_output
from .ledger import Ledger, LedgerError, default_path
from .limits import MAX_ATTEMPTS, READ_TIMEOUT, RESUME_REASONS, STRATEGIES, SUBMIT_TIMEOUT
from .sqlquery import DEFAULT_TIMEOUT as DEFAULT_SQL_TIMEOUT
from .sqlquery import run_query
from .timeutil import parse_since, utcnow

# The names below come from the domain modules on first use (PEP 562 ``__getattr__``): a read command
# (status, list, missing, sql) then starts without importing registration, validation, sync, resume,
# the runtimes, the registry and the report, which took ~80 ms of its start-up. Functions of this
# module that need one of them import it where they run.
_LAZY = {
    "IdempotentSimulationService": ("idempotent", "IdempotentSimulationService"),
    **{name: ("registration", name) for name in ("Forgotten", "Registered", "create_job",
                                                 "forget", "prepare_job",
                                                 "read_spec", "register")},
    "pull_jobs": ("registry.transfer", "pull"),
    "push_jobs": ("registry.transfer", "push"),
    **{name: ("report", name) for name in ("ReportWritten", "write_job_report", "write_ledger_report")},
    "serve_ledger": ("report.datasette", "serve_ledger"),
    **{name: ("resume", name) for name in ("Resumed", "ResumePlan", "plan_resume", "resume")},
    **{name: ("prune", name) for name in ("Pruned", "prune_spec")},
    "check_resume_reasons": ("resume", "check_reasons"),
    **{name: ("sync", name) for name in ("Cancelled", "Submitted", "SyncChange", "cancel_job", "submit_job")},
    "sync_jobs": ("sync", "sync"),
    "Plan": ("validation_plan", "Plan"),
    "ValidationResult": ("validation", "ValidationResult"),
    "validate_job": ("validation", "validate_job"),
    "explain_validation": ("validation_plan", "explain"),
}

if TYPE_CHECKING:  # what _LAZY names, for type checkers
    from .idempotent import IdempotentSimulationService
    from .prune import Pruned, prune_spec
    from .registration import Forgotten, Registered, create_job, forget, prepare_job, read_spec, register
    from .registry.transfer import pull as pull_jobs
    from .registry.transfer import push as push_jobs
    from .report import ReportWritten, write_job_report, write_ledger_report
    from .report.datasette import serve_ledger
    from .resume import Resumed, ResumePlan, plan_resume, resume
    from .resume import check_reasons as check_resume_reasons
    from .sync import Cancelled, Submitted, SyncChange, cancel_job, submit_job
    from .sync import sync as sync_jobs
    from .validation import ValidationResult, validate_job
    from .validation_plan import Plan
    from .validation_plan import explain as explain_validation


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __package__), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def ledger_path(path: str | Path | None) -> Path:
    """Where the ledger is: ``path``, else $JOBLEDGER_DB, else the XDG data directory."""
    return Path(os.path.expanduser(path)) if path else default_path()


def job_ids(ledger_file: str | Path | None, *, prefix: str = "") -> list[str]:
    """Job ids starting with ``prefix`` (a read-only look, for shell completion)."""
    ledger = Ledger(ledger_file, readonly=True)
    try:
        return ledger.job_ids(prefix)
    finally:
        ledger.close()


def open_ledger(path: str | Path | None = None, *, registry: str | None = None,
                readonly: bool = False) -> Ledger:
    """The ledger, mirrored to ``registry`` (when given) for every status change it writes."""
    mirror = None
    if registry and not readonly:
        from .registry import open_mirror
        mirror = open_mirror(registry)
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
    param_sets: list[dict]          # param_id, expected, verified (its replicates and aggregations)
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
    # Grouped by the integer param_key over the narrow outputs view, then named: grouping the wide
    # expected_outputs view by param_id took 1.3 s at 1,000,000 outputs, this 0.8 s.
    param_sets = ledger.query(
        "SELECT p.param_id, g.expected, g.verified FROM (SELECT param_key, count(*) AS expected, "
        "sum(state = 'verified') AS verified, min(output_id) AS first FROM outputs "
        "WHERE job_id = ? GROUP BY param_key) g "
        "JOIN params p ON p.param_key = g.param_key ORDER BY g.first", (job_id,))
    return JobStatus({k: job[k] for k in STATUS_FIELDS}, counts, bool(runs), runs[0] if runs else None,
                     param_sets,
                     _descendants(ledger, job_id))


def counts(ledger: Ledger, job_id: str) -> dict:
    """expected / verified / missing / errored / incomplete / stale of one job."""
    return ledger.summary(job_id)


def has_unchecked(ledger: Ledger, job_id: str) -> bool:
    """Whether some of the job's outputs no validation has looked at yet (one index probe)."""
    return bool(ledger.query("SELECT EXISTS (SELECT 1 FROM outputs WHERE job_id = ? AND state = ?) AS x",
                             (job_id, states.UNCHECKED))[0]["x"])


def _descendants(ledger: Ledger, job_id: str) -> list[dict]:
    """The resume tree below ``job_id`` from the ``job_lineage`` view, depth counted from ``job_id``."""
    if not ledger.query("SELECT 1 FROM jobs WHERE parent_job_id = ? LIMIT 1", (job_id,)):
        return []  # no children: spare the job_summary counts below (a pass over every output)
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


STATUSES = states.STATUSES


def spec(ledger: Ledger, job_id: str) -> str:
    """The SimJob spec the job was submitted with, as the JSON text the Kubernetes runtime uploads
    for ModelOps (its key order): the same bytes, plus a final newline."""
    from .registration import prepare_job
    from .runtimes.kubernetes import spec_bytes
    job = ledger.job(job_id)
    doc = ledger.spec_of(job_id)
    if doc is None:
        raise LedgerError(f"{job_id} has no spec in the ledger (ModelOps created it; only its state is "
                          f"known)")
    if job["spec_format"] == "study":
        simjob, _, _ = prepare_job(doc["study"], bundle=doc["bundle_ref"], job_id=job_id)
    else:
        simjob, _, _ = prepare_job(doc, job_id=job_id)
    return spec_bytes(simjob).decode() + "\n"


def list_jobs(ledger: Ledger, *, status: str | None = None, since: str | None = None,
              limit: int | None = None) -> list[dict]:
    if status and status not in states.STATUSES:
        raise ContractError(f"--status: {status!r} is not one of {', '.join(states.STATUSES)}")
    return ledger.list_jobs(status, parse_since(since) if since else None, limit)


# Why an output is listed by ``missing``: what a validation saw, or that none has looked yet.
MISSING_REASONS = tuple(s for s in states.OUTPUT_STATES if s != "verified") + (states.UNCHECKED,)


@dataclass(frozen=True)
class Rows:
    """Rows read from the ledger as they are iterated (one tuple per row, in ``columns`` order)."""
    columns: tuple[str, ...]
    rows: Iterable[tuple]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)

    def dicts(self) -> Iterator[dict]:
        return (dict(zip(self.columns, row, strict=True)) for row in self.rows)


def missing(ledger: Ledger, job_id: str, *, reason: str | None = None, limit: int | None = None) -> Rows:
    """Expected outputs not verified, with why ('unchecked' until a validation observed them), streamed."""
    if reason and reason not in MISSING_REASONS:
        raise ContractError(f"--reason: {reason!r} is not one of {', '.join(MISSING_REASONS)}")
    return Rows(Ledger.UNVERIFIED_COLUMNS, ledger.unverified_rows(job_id, reason, limit))


def history(ledger: Ledger, job_id: str) -> list[dict]:
    return ledger.transitions(job_id)


def run_sql(ledger_path: str | Path | None, query: str, *,
            timeout: float | None = DEFAULT_SQL_TIMEOUT) -> Rows:
    """Run an ad-hoc query read-only (no writes, no ATTACH, no settings), stopped after ``timeout``
    seconds or on Ctrl-C; the rows stream, and the connection closes when they are exhausted."""
    columns, rows = run_query(ledger_path, query, timeout=timeout)
    return Rows(columns, rows)


# ------------------------------------------------------------------ runs

def _prepared(spec: Any, bundle: str | None, job_id: str | None, runtime_options: dict | None):
    """The job to submit. A study without --bundle but with a local --bundle-path gets the
    directory's content digest as its bundle (``directory_bundle_ref``)."""
    from .registration import directory_bundle_ref, prepare_job, read_spec
    doc = read_spec(spec) if isinstance(spec, (str, Path)) else spec
    bundle_path = (runtime_options or {}).get("bundle_path")
    if bundle is None and bundle_path and isinstance(doc, dict) and is_study(doc):
        bundle = directory_bundle_ref(bundle_path)
    return prepare_job(doc, bundle=bundle, job_id=job_id)


def submit(ledger: Ledger, spec: Any, *, runtime: str, bundle: str | None = None, job_id: str | None = None,
           store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
           runtime_options: dict | None = None, progress: Callable[[int], None] | None = None,
           on_total: Callable[[int], None] | None = None) -> Submitted:
    """Register a spec (a path, '-' or a document) and start it on ``runtime``; ``on_total``/``progress``
    follow the registration of its expected outputs."""
    from .sync import submit_job
    job, stored, fmt = _prepared(spec, bundle, job_id, runtime_options)
    return submit_job(ledger, job, stored, fmt, runtime=runtime, store=store, layout=layout,
                      seed_policy=seed_policy, runtime_options=runtime_options,
                      reason=f"submitted with {runtime}", progress=progress, on_total=on_total)


def preview(ledger_file: str | Path | None, spec: Any, *, runtime: str, bundle: str | None = None,
            job_id: str | None = None, store: str | None = None, layout: str | None = None,
            runtime_options: dict | None = None) -> dict:
    """What ``submit`` would upload and create (the spec and the runtime's objects); changes nothing."""
    from .sync import preview_submission
    job, _, _ = _prepared(spec, bundle, job_id, runtime_options)
    return preview_submission(ledger_path(ledger_file), job, runtime=runtime, store=store, layout=layout,
                              runtime_options=runtime_options)


# ------------------------------------------------------------------ watching and logs

def watch(ledger: Ledger, job_ids: Iterable[str] = (), *, interval: float, until_done: bool = False,
          validate: bool = True, runtime_options: dict | None = None, submit_timeout: float = SUBMIT_TIMEOUT,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[list[SyncChange]]:
    """``sync`` again and again, ``interval`` seconds apart; yields each pass's changes. Watched are
    the jobs named, else the unfinished ones when the watch starts. With ``until_done`` it ends
    once every watched job is terminal (succeeded, partial, failed, cancelled)."""
    from .sync import sync as sync_jobs
    watched = list(dict.fromkeys(job_ids)) or ledger.unfinished_job_ids()
    while True:
        yield sync_jobs(ledger, watched, validate=validate, runtime_options=runtime_options,
                        submit_timeout=submit_timeout)
        if until_done and all(ledger.job(job_id)["status"] in states.TERMINAL for job_id in watched):
            return
        sleep(interval)


def exit_status(ledger: Ledger, job_ids: Iterable[str]) -> int:
    """``validate``'s exit status for a set of jobs: 0 every expected output verified, 3 some, 4 none."""
    from .validation import exit_status as validation_exit_status
    totals = [ledger.summary(job_id) for job_id in job_ids]
    return validation_exit_status(sum(t["expected"] for t in totals), sum(t["verified"] for t in totals))


def logs(ledger: Ledger, job_id: str, *, follow: bool = False, tail: int | None = None,
         runtime_options: dict | None = None) -> Iterator[str]:
    """The job's log as text chunks: the local worker's log file, or the Kubernetes runner pod's
    log; with ``follow``, until the job's process ends."""
    from .sync import runtime_for
    row = ledger.job(job_id)
    if not row["runtime"]:
        raise LedgerError(f"{job_id} was submitted elsewhere: jobledger does not know where its log is")
    return runtime_for(ledger.path, row["runtime"], runtime_options).logs(row, follow=follow, tail=tail)


def prune(spec: Any, store: str, *, bundle: str | None = None, layout: str = "token",
          seed_policy: str = "runner") -> Pruned:
    from .prune import prune_spec
    from .registration import read_spec
    return prune_spec(read_spec(spec) if isinstance(spec, (str, Path)) else spec, store, bundle=bundle,
                      layout=layout, seed_policy=seed_policy)


__all__ = ["write_output", "ledger_path", "open_ledger",
           "read_spec", "register", "forget", "create_job", "prepare_job",
           "status", "counts", "has_unchecked", "job_ids", "spec", "STATUSES", "watch", "exit_status", "logs",
           "list_jobs", "missing", "history", "run_sql", "submit", "preview", "prune", "parse_since",
           "utcnow",
           "validate_job", "explain_validation", "pull_jobs", "push_jobs", "IdempotentSimulationService",
           "prune_spec", "plan_resume", "resume", "submit_job", "sync_jobs", "cancel_job", "Registered",
           "Forgotten", "JobStatus", "Rows", "ValidationResult", "Plan", "SyncChange", "Submitted",
           "Cancelled", "ResumePlan", "Resumed", "Pruned", "JobledgerError", "MISSING_REASONS",
           "SUBMIT_TIMEOUT", "READ_TIMEOUT", "STRATEGIES", "MAX_ATTEMPTS", "RESUME_REASONS",
           "check_resume_reasons",
           "ReportWritten", "write_job_report", "write_ledger_report", "serve_ledger"]
