"""The importable API: every CLI command is one of these functions over a Ledger."""
from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import states
from .contracts import ContractError, SimJob, is_study, load_spec
from .errors import JobledgerError
from .layout import Layout, warn_for_bundle
from .ledger import Ledger, LedgerError, spec_hash
from .timeutil import parse_since, utcnow
from .manifest import check_seed_policy
from .stores import normalize_store_url


def read_spec(path: str | Path) -> Any:
    """Load a spec file ('-' reads stdin) with one-line errors for unreadable or invalid JSON."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"cannot read spec {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"spec {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


@dataclass
class Registered:
    job_id: str
    expected: int
    created: bool
    status: str
    warnings: list[str]


def prepare_job(spec: Any, *, bundle: str | None = None, job_id: str | None = None) -> tuple[SimJob, Any, str]:
    """(SimJob, the document to keep, its format) from a spec document or a contracts object."""
    if isinstance(spec, (dict, list)):
        fmt = "study" if is_study(spec) else "simjob"
        job = load_spec(spec, bundle_ref=bundle, job_id=job_id)
        doc = {"study": spec, "bundle_ref": job.bundle_ref} if fmt == "study" else spec
        return job, doc, fmt
    if isinstance(spec, SimJob):
        return spec, spec.to_json(), "simjob"
    if hasattr(spec, "tasks") and hasattr(spec, "job_type"):
        from .contracts import from_contracts_object
        job = from_contracts_object(spec)
        return job, job.to_json(), "simjob"
    raise ContractError(f"spec: expected a JSON document or a SimJob, got {type(spec).__name__}")


def create_job(ledger: Ledger, job: SimJob, spec_doc: Any, spec_format: str, *, status: str, reason: str,
               store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
               runtime: str | None = None, namespace: str | None = None, k8s_name: str | None = None,
               parent_job_id: str | None = None) -> Registered:
    """Record a job and all its expected outputs in one transaction; an identical re-registration is a no-op."""
    layout_obj = Layout.parse(layout)
    policy = check_seed_policy(seed_policy)
    store_url = normalize_store_url(store)
    notes = [w for w in {warn_for_bundle(t.bundle_ref) for t in job.tasks[:1]} | {warn_for_bundle(job.bundle_ref)} if w]
    if ledger.mirror is not None and not ledger.job_exists(job.job_id):
        ledger.mirror.pull_job(ledger, job.job_id, missing_ok=True)  # created by ModelOps or another machine?
    with ledger.transaction():
        if ledger.job_exists(job.job_id):
            existing = ledger.job(job.job_id)
            if existing["spec_format"] is None:
                # Known only from ModelOps's state.json: adopt it (its status, created_at, metadata stay).
                count = ledger.adopt_spec(job, store_url=store_url, layout=layout_obj, seed_policy=policy,
                                          spec_doc=spec_doc, spec_format=spec_format)
                ledger.notify_changed(job.job_id)
                return Registered(job.job_id, count, True, existing["status"], notes)
            same = (existing["spec_sha256"] == spec_hash(spec_doc) and existing["layout"] == layout_obj.name
                    and existing["seed_policy"] == policy and existing["store_url"] == store_url)
            if not same:
                raise LedgerError(f"job {job.job_id} is already registered with a different spec or options")
            ledger.notify_changed(job.job_id)  # completes a publication an earlier attempt could not make
            return Registered(job.job_id, existing["expected_total"], False, existing["status"], notes)
        count = ledger.insert_job(job, status=status, store_url=store_url, layout=layout_obj, seed_policy=policy,
                                  spec_doc=spec_doc, spec_format=spec_format, runtime=runtime, k8s_name=k8s_name,
                                  k8s_namespace=namespace, parent_job_id=parent_job_id, reason=reason)
        # Published before the local commit: if the registry cannot take the job, the ledger keeps nothing.
        ledger.notify_changed(job.job_id)
    return Registered(job.job_id, count, True, status, notes)


def register(ledger: Ledger, spec: Any, *, bundle: str | None = None, job_id: str | None = None,
             store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
             namespace: str | None = None, k8s_name: str | None = None) -> Registered:
    """Record a job that was submitted elsewhere: it starts in ``scheduled``."""
    if isinstance(spec, (str, Path)):
        spec = read_spec(spec)
    job, doc, fmt = prepare_job(spec, bundle=bundle, job_id=job_id)
    runtime = "k8s" if (namespace or k8s_name) else None
    return create_job(ledger, job, doc, fmt, status=states.SCHEDULED, reason="registered (submitted elsewhere)",
                      store=store, layout=layout, seed_policy=seed_policy, runtime=runtime,
                      namespace=namespace, k8s_name=k8s_name or (job.job_id if runtime else None))


# ------------------------------------------------------------------ reads

STATUS_FIELDS = ("job_id", "status", "job_type", "bundle_ref", "runtime", "k8s_name", "k8s_namespace",
                 "parent_job_id", "store_url", "layout", "seed_policy", "tasks_total", "created_at",
                 "updated_at", "validation_attempts", "error_message", "last_validation_error")


def status(ledger: Ledger, job_id: str) -> dict:
    """The status document of one job (the `status --json` contract)."""
    job = ledger.job(job_id)
    out = {k: job[k] for k in STATUS_FIELDS}
    counts = ledger.summary(job_id)
    out.update(counts)
    out["pct_verified"] = round(100.0 * counts["verified"] / counts["expected"], 1) if counts["expected"] else None
    runs = ledger.query("SELECT run_id, started_at, finished_at, strategy, requests, verified, missing, errored, "
                        "incomplete, unexpected, outcome, error FROM validation_runs WHERE job_id = ? "
                        "ORDER BY run_id DESC LIMIT 1", (job_id,))
    out["last_validation"] = runs[0] if runs else None
    out["param_sets"] = ledger.query(
        "SELECT p.param_id, count(*) AS expected, sum(o.state = 'verified') AS verified "
        "FROM outputs o JOIN params p ON p.param_key = o.param_key WHERE o.job_id = ? AND o.kind = 'simulation' "
        "GROUP BY o.param_key ORDER BY min(o.output_id)", (job_id,))
    out["lineage"] = ledger.query(
        "WITH RECURSIVE tree(job_id, parent_job_id, depth) AS ("
        " SELECT job_id, parent_job_id, 0 FROM jobs WHERE job_id = ?"
        " UNION ALL SELECT j.job_id, j.parent_job_id, tree.depth + 1 FROM jobs j JOIN tree ON j.parent_job_id = tree.job_id)"
        " SELECT tree.job_id, tree.parent_job_id, tree.depth, j.status, s.expected, s.verified"
        " FROM tree JOIN jobs j USING (job_id) JOIN job_summary s USING (job_id) WHERE tree.depth > 0"
        " ORDER BY tree.depth, tree.job_id", (job_id,))
    return out


def list_jobs(ledger: Ledger, *, status: str | None = None, since: str | None = None,
              limit: int | None = None) -> list[dict]:
    if status and status not in states.STATUSES:
        raise ContractError(f"--status: {status!r} is not one of {', '.join(states.STATUSES)}")
    return ledger.list_jobs(status, parse_since(since) if since else None, limit)


MISSING_REASONS = ("missing", "errored", "incomplete")


def missing(ledger: Ledger, job_id: str, *, reason: str | None = None, limit: int | None = None) -> list[dict]:
    """Expected outputs not verified, with why; before any validation every output is 'missing'."""
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


# The rest of the API lives with the concept it belongs to; it is re-exported here so that
# `from jobledger import api` gives a Python user every command.
from .idempotent import IdempotentSimulationService, prune_spec  # noqa: E402
from .registry.mirror import pull as pull_jobs, push as push_jobs  # noqa: E402
from .resume import plan_resume, resume  # noqa: E402
from .sync import cancel_job, submit_job, sync as sync_jobs  # noqa: E402
from .validation import exit_code as validation_exit_code, explain as explain_validation, validate_job  # noqa: E402

__all__ = ["read_spec", "register", "create_job", "prepare_job", "status", "list_jobs", "missing", "history",
           "run_sql", "parse_since", "Registered", "JobledgerError", "utcnow", "validate_job", "explain_validation",
           "validation_exit_code", "pull_jobs", "push_jobs", "IdempotentSimulationService", "prune_spec",
           "plan_resume", "resume", "submit_job", "sync_jobs", "cancel_job"]
