"""``jobledger prune``: a SimJob spec without the tasks whose outputs a store already holds verified.

Resume's planning (resume.plan_children, plan_task_groups) applied to a store listing instead of the
ledger: no ledger, no registry, nothing recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

from .contracts import load_spec
from .idempotent import verified_paths
from .layout import Layout
from .manifest import ExpectedOutput, check_seed_policy, expected_outputs
from .resume import PendingTask, plan_children, plan_task_groups


@dataclass(frozen=True)
class Pruned:
    spec: dict
    kept: int          # tasks in the pruned spec
    dropped: int       # tasks removed
    overcompute: int   # kept tasks whose outputs are already verified (runner policy spans)


def prune_spec(spec_doc, store, *, bundle: str | None = None, layout: str | Layout = "token",
               seed_policy: str = "runner") -> Pruned:
    """The SimJob spec without the tasks whose outputs are already verified in ``store``.

    Resume planned from the store instead of the ledger: under the ``runner`` policy the kept
    tasks of a param set are rewritten as one run of runner seeds spanning its unfinished
    outputs (the runner cannot skip seeds inside a group); verified seeds inside such a span
    are counted as over-compute. A spec with targets keeps every param set with an unfinished
    replicate whole (the runner aggregates what the job runs, so a partial set would give a stale
    aggregation): its verified replicates are the over-compute. Aggregations are not looked at.
    """
    job = load_spec(spec_doc, bundle_ref=bundle)
    policy = check_seed_policy(seed_policy)
    layout_obj = layout if isinstance(layout, Layout) else Layout.parse(layout)
    rows = [r for r in expected_outputs(job, layout_obj, policy) if r.kind == "simulation"]
    done = verified_paths(store, [r.path for r in rows])
    params = {t.params.param_id: t.params.params for t in job.tasks}

    def pending_task(r: ExpectedOutput) -> PendingTask:
        assert r.task_seed is not None and r.run_seed is not None  # a simulation row has both seeds
        return PendingTask(r.param_id, params[r.param_id], r.bundle_ref, r.entrypoint, r.outputs, r.task_seed,
                           r.run_seed, r.path in done)

    pending = [pending_task(r) for r in rows if r.path not in done]
    if job.target_entrypoints:
        unfinished = {p.param_id for p in pending}
        whole = [pending_task(r) for r in rows if r.param_id in unfinished]
        children = plan_children([], whole, policy)
        tasks, overcompute = children.with_targets, children.overcompute
    elif policy == "task":
        keep = {(p.param_id, p.task_seed, p.entrypoint, p.outputs) for p in pending}
        tasks = [t for t in job.tasks if (t.param_id, t.seed, t.entrypoint, t.outputs) in keep]
        overcompute = 0
    else:
        groups, overcompute = plan_task_groups(pending, policy, single_job=True)
        tasks = groups[0] if groups else []
    pruned = job.to_json()
    pruned["tasks"] = [t.to_json() for t in tasks]
    return Pruned(pruned, len(tasks), len(job.tasks) - len(tasks), overcompute)


__all__ = ["Pruned", "prune_spec"]
