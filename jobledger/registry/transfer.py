"""The pull and push commands: move whole jobs between the ledger and the registry through the Mirror."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ..ledger import Ledger
from ..timeutil import parse_since
from .base import RegistryError
from .mirror import Mirror, PullResult, PushResult


def _mirror_of(ledger: Ledger) -> Mirror:
    if not isinstance(ledger.mirror, Mirror):
        raise RegistryError("no registry configured: pass --registry URL or set JOBLEDGER_REGISTRY")
    return ledger.mirror


def refresh(ledger: Ledger, job_id: str) -> None:
    """Before a command decides from a job's status: import the moves the registry holds beyond this
    ledger's (ModelOps's update_status, another machine), reading only its state.json. Nothing without a
    registry, or for a job this ledger does not know."""
    if isinstance(ledger.mirror, Mirror) and ledger.job_exists(job_id):
        ledger.mirror.pull_job(ledger, job_id, missing_ok=True, observations=False)


def pull(ledger: Ledger, job_ids: Iterable[str] = (), *, since: str | None = None,
         progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None
         ) -> list[PullResult]:
    """Import or refresh jobs from the registry into the local ledger (idempotent).

    Each job is fetched first and written in its own short transaction, so a bad job
    (corrupt state.json) is reported as 'failed' and leaves every other job alone.
    """
    mirror = _mirror_of(ledger)
    explicit = list(job_ids)
    ids = explicit or mirror.job_ids()
    if on_total:
        on_total(len(ids))
    cutoff = parse_since(since) if since else None
    results = []
    for job_id in ids:
        try:
            result = mirror.pull_job(ledger, job_id, cutoff)
        except RegistryError as exc:
            if explicit and len(explicit) == 1:
                raise
            result = PullResult(job_id, "failed", note=str(exc))
        if result is not None:
            results.append(result)
        if progress:
            progress(1)
    return results


def push(ledger: Ledger, job_ids: Iterable[str] = (), *, progress: Callable[[int], None] | None = None
         ) -> list[PushResult]:
    """Publish local jobs (e.g. registered before a registry was configured)."""
    mirror = _mirror_of(ledger)
    ids = list(job_ids) or [r["job_id"] for r in
                            ledger.query("SELECT job_id FROM jobs ORDER BY created_at, job_id")]
    results = []
    for job_id in ids:
        ledger.job(job_id)
        mirror.publish(ledger, job_id)
        results.append(PushResult(job_id, ledger.job(job_id)["status"]))
        if progress:
            progress(1)
    return results


__all__ = ["pull", "push"]
