"""Resume: the not-verified outputs of a job become child SimJobs that write exactly those outputs.

The ModelOps runner executes, per param set, the seeds ``group[0].seed + i`` whatever the
seed policy the job was registered with: a job can only reproduce one contiguous run of
seeds per param set. Missing seeds (runner seeds under ``runner``, task seeds under ``task``)
are therefore split into contiguous runs and child job k carries run k of every param set,
so the number of children is the largest number of runs of any param set and nothing
already verified is recomputed (over-compute 0). Each child's tasks carry the seeds
themselves (s, s+1, ..., e), so task seeds and runner seeds agree and the child is correct
under either policy.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import states
from .contracts import (
    ContractError,
    SimJob,
    SimTask,
    UniqueParameterSet,
    check_bundle_ref,
    study_target_spec,
)
from .jobrows import StoredSpec
from .ledger import Ledger, LedgerError, SpecNeeded
from .limits import MAX_ATTEMPTS, RESUME_REASONS
from .registry.transfer import refresh
from .sync import Submitted, submit_job

# Rows read between two progress reports while planning.
PROGRESS_STEP = 10_000

_RESUME_SUFFIX = re.compile(r"(?:-r[0-9]+)+\Z")
DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class PendingTask:
    """One output to produce again: what the task was and the seed whose directory must appear."""
    param_id: str
    params: dict
    bundle_ref: str
    entrypoint: str
    outputs: tuple[str, ...] | None
    task_seed: int
    run_seed: int
    verified: bool = False  # verified already: re-run only to redo its param set's aggregation


@dataclass
class ResumePlan:
    parent: str
    root: str
    jobs: list[SimJob]
    outputs: int
    overcompute: int
    in_flight: int = 0   # outputs left out because a running child already expects them
    notes: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)  # paths left out: errored in max_attempts jobs
    retried: list[str] = field(default_factory=list)   # paths the children produce again
    max_attempts: int = MAX_ATTEMPTS

    def as_dict(self) -> dict:
        """The ``resume --dry-run --json`` object: the child jobs as ModelOps SimJob specs."""
        return {"parent": self.parent, "jobs": [job.to_json() for job in self.jobs], "outputs": self.outputs,
                "overcompute": self.overcompute, "given_up": len(self.given_up),
                "max_attempts": self.max_attempts, "notes": self.notes}

    def given_up_note(self) -> str:
        n = len(self.given_up)
        return (f"{n} output{'s' if n != 1 else ''} given up after {self.max_attempts} attempts; "
                f"`jobledger resume {self.parent} --max-attempts {self.max_attempts + 1}` tries them again")


@dataclass(frozen=True)
class Resumed:
    """The plan that was carried out and one submission per child job."""
    plan: ResumePlan
    submitted: list[Submitted]

    def as_dict(self) -> dict:
        return {**self.plan.as_dict(), "submitted": [s.as_dict() for s in self.submitted]}


# ------------------------------------------------------------------ planning (pure)

def plan_task_groups(pending: Iterable[PendingTask], seed_policy: str = "runner", *,
                     single_job: bool = False) -> tuple[list[list[SimTask]], int]:
    """Task lists, one per job, whose executed seeds cover ``pending``; and the over-compute.

    The ModelOps runner runs, per param set of a job, seeds ``first task's seed + i``,
    whatever the job's seed policy; so under either policy each param set's missing seeds
    (the runner seeds under ``runner``, each task's own seed under ``task``) are split into
    contiguous runs and child k carries run k of every param set, with task seed = run seed.
    ``single_job`` (for spec pruning) spans each param set's missing seeds with one run,
    recomputing the verified seeds in between: that count is the over-compute.
    """
    by_param: dict[str, dict[int, PendingTask]] = {}
    for p in pending:
        by_param.setdefault(p.param_id, {})[p.run_seed if seed_policy == "runner" else p.task_seed] = p
    if not by_param:
        return [], 0
    runs_by_param: list[list[list[SimTask]]] = []
    overcompute = 0
    for rows in by_param.values():
        seeds = sorted(rows)
        if single_job:
            first = rows[seeds[0]]
            if any((rows[s].entrypoint, rows[s].outputs, rows[s].bundle_ref) !=
                   (first.entrypoint, first.outputs, first.bundle_ref) for s in seeds):
                raise ContractError(f"param set {first.param_id[:16]}: tasks with different entrypoints or "
                                    f"outputs cannot share one runner group")
            overcompute += seeds[-1] - seeds[0] + 1 - len(seeds)
            runs_by_param.append([[_task(first, s) for s in range(seeds[0], seeds[-1] + 1)]])
            continue
        runs: list[list[SimTask]] = []
        previous: tuple[int, PendingTask] | None = None
        for seed in seeds:
            row = rows[seed]
            same_run = (previous is not None and seed == previous[0] + 1
                        and (row.entrypoint, row.outputs, row.bundle_ref)
                        == (previous[1].entrypoint, previous[1].outputs, previous[1].bundle_ref))
            if not same_run:
                runs.append([])
            runs[-1].append(_task(row, seed))
            previous = (seed, row)
        runs_by_param.append(runs)
    depth = max(len(runs) for runs in runs_by_param)
    groups = [[task for runs in runs_by_param if k < len(runs) for task in runs[k]] for k in range(depth)]
    return groups, overcompute


@dataclass
class ChildTasks:
    """What the children of a resume run: ``with_targets`` (one child, with the job's target_spec) holds
    whole param sets whose aggregations must be redone, ``groups`` (one child each, no targets) the
    missing seeds of the others."""
    with_targets: list[SimTask]
    groups: list[list[SimTask]]
    overcompute: int
    notes: list[str]


def plan_children(pending: Iterable[PendingTask], whole: Iterable[PendingTask], seed_policy: str = "runner",
                  *, skips_verified: bool = False) -> ChildTasks:
    """Plan ``pending`` (missing seeds of param sets whose aggregations are fine, or that have none)
    and ``whole`` (every replicate of param sets whose aggregation must be redone: the runner
    aggregates what one job ran, so such a set goes into one job with the job's targets).

    Over-compute is the verified replicates the children re-run; 0 with ``skips_verified``, for a
    runtime (the local one) that reuses verified outputs instead of recomputing them.
    """
    groups, overcompute = plan_task_groups(pending, seed_policy)
    by_param: dict[str, dict[int, PendingTask]] = {}
    for p in whole:
        by_param.setdefault(p.param_id, {})[p.run_seed if seed_policy == "runner" else p.task_seed] = p
    tasks: list[SimTask] = []
    notes: list[str] = []
    for param_id, rows in by_param.items():
        seeds = sorted(rows)
        if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            notes.append(f"param set {param_id[:16]}: its replicate seeds are not consecutive, so the "
                         f"ModelOps runner (first seed + i) cannot re-run it as one group; its resume child "
                         f"is right on a runtime that runs each task's own seed (local)")
        tasks.extend(_task(rows[seed], seed) for seed in seeds)
        if not skips_verified:
            overcompute += sum(rows[seed].verified for seed in seeds)
    return ChildTasks(tasks, groups, overcompute, notes)


def _task(p: PendingTask, seed: int) -> SimTask:
    return SimTask(p.bundle_ref, p.entrypoint, UniqueParameterSet(p.param_id, p.params), seed, p.outputs)


def root_of(job_id: str) -> str:
    """The original job of a resume tree: the id without any -rN suffix."""
    return _RESUME_SUFFIX.sub("", job_id)


def child_ids(root: str, existing: Iterable[str], count: int) -> list[str]:
    """``<root>-r<N>`` for the next ``count`` free numbers: flat names, so any depth stays ≤ 63 chars."""
    numbers = [int(m.group(1)) for jid in existing if (m := re.fullmatch(re.escape(root) + r"-r(\d+)", jid))]
    start = max(numbers, default=0) + 1
    ids = [f"{root}-r{n}" for n in range(start, start + count)]
    for jid in ids:
        if len(jid) > DNS_LABEL_MAX:
            raise LedgerError(f"resume id {jid} would exceed {DNS_LABEL_MAX} characters")
    return ids


# ------------------------------------------------------------------ planning from the ledger

RESUMABLE = (states.PARTIAL, states.FAILED)


def check_reasons(reasons: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(r.strip() for r in reasons if r.strip()))
    bad = [r for r in chosen if r not in RESUME_REASONS]
    if bad or not chosen:
        raise ContractError(f"--reason: {', '.join(bad) or 'nothing'} is not a list of "
                            f"{', '.join(RESUME_REASONS)}")
    return chosen


def plan_resume(ledger: Ledger, job_id: str, *, bundle: str | None = None, runtime: str | None = None,
                reasons: Iterable[str] = RESUME_REASONS, max_attempts: int = MAX_ATTEMPTS,
                progress=None) -> ResumePlan:
    """The child jobs that would produce the not-verified outputs of ``job_id``, aggregations included.

    ``reasons`` chooses which not-verified simulation outputs (by state) to produce again; one that
    came back errored in ``max_attempts`` jobs of its resume tree (the original and every resume job
    writing to the same store) is given up. ``runtime`` (default: the job's) decides the over-compute:
    the local runtime reuses verified replicates of a param set it re-runs whole, the ModelOps runner
    recomputes them. ``progress`` (optional) is told ``start(n)`` the outputs to look at, at most, then
    ``advance(k)`` as they are read.
    """
    refresh(ledger, job_id)
    job = ledger.job(job_id)
    if job["spec_format"] is None:
        # Known only from ModelOps's state.json: without the spec there are no tasks to run again (at most the
        # result paths ModelOps reported, which name no parameters or entrypoint).
        reported = ledger.conn.execute("SELECT 1 FROM outputs WHERE job_id = ? LIMIT 1", (job_id,)).fetchone()
        raise SpecNeeded(job_id, "no spec known, only the result paths ModelOps reported" if reported else
                         "no expected outputs known", "resume")
    if job["status"] not in RESUMABLE:
        raise LedgerError(f"{job_id} is {job['status']}: only partial or failed jobs can be resumed")
    validated = ledger.query("SELECT 1 FROM validation_runs WHERE job_id = ? AND outcome IS NOT NULL "
                             "AND outcome <> 'error' LIMIT 1", (job_id,))
    if not validated:
        raise LedgerError(f"{job_id} is {job['status']} but its outputs were never observed; "
                          f"run `jobledger validate --force {job_id}` first so resume knows what is missing")
    if bundle:
        check_bundle_ref(bundle, "--bundle")
    reasons = check_reasons(reasons)
    if max_attempts < 1:
        raise ContractError(f"--max-attempts: {max_attempts} is not a positive number")
    args = {"job": job_id, "store": job["store_url"]}
    redo_of = {r["param_id"]: r["n"] for r in ledger.query(
        _REDO_SQL + "SELECT param_id, count(*) AS n FROM redo GROUP BY param_id", args)}
    rows = list(_pending_rows(ledger, args, sum(redo_of.values()), progress))
    # An aggregation needs every replicate of its param set verified: a param set holding a replicate
    # that came back errored in max_attempts jobs is given up whole, its aggregations not redone.
    hopeless = {r["param_id"] for r in rows if r["whole"] and not r["verified"] and not r["in_flight"]
                and r["attempts"] >= max_attempts}
    for r in rows:
        if r["param_id"] in hopeless:
            r["whole"] = 0
    redo = sum(n for param_id, n in redo_of.items() if param_id not in hopeless)
    # Replicates of a param set whose aggregation is redone ('whole') run whatever their state.
    rows = [r for r in rows if r["whole"] or (not r["verified"] and (
        r["state"] in reasons or (r["state"] == states.UNCHECKED and "missing" in reasons)))]
    in_flight = sum(1 for r in rows if r["in_flight"] and not r["whole"])
    given_up = [r for r in rows if not r["whole"] and not r["in_flight"] and r["attempts"] >= max_attempts]
    retried = [r for r in rows if not r["whole"] and not r["in_flight"] and r["attempts"] < max_attempts]

    def pending(r: dict) -> PendingTask:
        return PendingTask(r["param_id"], json.loads(r["params_json"]), bundle or r["bundle_ref"],
                           r["entrypoint"], _outputs(r["outputs"]), int(r["task_seed"]), int(r["run_seed"]),
                           bool(r["verified"]))

    children = plan_children([pending(r) for r in retried],
                             [pending(r) for r in rows if r["whole"]], job["seed_policy"],
                             skips_verified=(runtime or job["runtime"]) == "local")
    root = root_of(job_id)
    existing = [r["job_id"] for r in ledger.query("SELECT job_id FROM jobs WHERE job_id GLOB ?",
                                                  (root + "-r*",))]
    task_lists = ([children.with_targets] if children.with_targets else []) + children.groups
    ids = child_ids(root, existing, len(task_lists))
    meta = {**json.loads(job["metadata"] or "{}"), "resume_of": job_id, "resume_root": root}
    target_spec = target_spec_of(ledger, job) if children.with_targets else None
    jobs = [SimJob(jid, bundle or job["bundle_ref"], tuple(tasks), 0, meta,
                   target_spec if k == 0 and children.with_targets else None, job["job_type"])
            for k, (jid, tasks) in enumerate(zip(ids, task_lists, strict=True))]
    outputs = len(retried) + sum(1 for r in rows if r["whole"] and not r["verified"]) + redo
    plan = ResumePlan(job_id, root, jobs, outputs, children.overcompute, in_flight, list(children.notes),
                      given_up=[r["path"] for r in given_up], retried=[r["path"] for r in retried],
                      max_attempts=max_attempts)
    if given_up:
        plan.notes.append(plan.given_up_note())
    if hopeless:
        n = sum(redo_of.get(param_id, 0) for param_id in hopeless)
        plan.notes.append(f"{n} aggregation(s) not redone: {len(hopeless)} param set(s) hold a replicate "
                          f"given up after {max_attempts} attempts, and an aggregation needs every replicate")
    if redo:
        plan.notes.append(f"{redo} aggregation(s) to redo: {jobs[0].job_id} re-runs their param sets whole "
                          f"with the job's targets, since the runner aggregates what one job ran")
    if in_flight:
        plan.notes.append(f"{in_flight} output(s) left out: an unfinished resume child already expects them")
    if bundle and bundle != job["bundle_ref"]:
        plan.notes.append(f"--bundle {bundle}: the children write under the new bundle's paths, so they "
                          f"complete the children, not {job_id} itself")
    return plan


def target_spec_of(ledger: Ledger, job: dict) -> dict | None:
    """The job's target_spec, as submitted (a study's as ModelOps's to_simjob builds it)."""
    doc = ledger.spec_of(job["job_id"])
    if not isinstance(doc, dict):
        return None
    if job["spec_format"] == "study":
        targets = (doc.get("study") or {}).get("targets")
        return study_target_spec(targets, json.loads(job["metadata"] or "{}")) if targets else None
    return doc.get("target_spec")


def _outputs(text: str) -> tuple[str, ...] | None:
    names = json.loads(text)
    return tuple(names) if names is not None else None


# A job's descendants in the same store (the parent is only re-validated on demand, so what they
# verified since counts as done), and the aggregations of the job to redo: not verified, not verified
# by a descendant since, not being produced by an unfinished one.
_REDO_SQL = """
WITH RECURSIVE descendants(job_id) AS (
    SELECT job_id FROM jobs WHERE parent_job_id = :job
    UNION SELECT j.job_id FROM jobs j JOIN descendants d ON j.parent_job_id = d.job_id
),
child_outputs AS (
    SELECT e.path, e.param_id, e.output_type, e.state, j.status FROM expected_outputs e
    JOIN jobs j ON j.job_id = e.job_id
    WHERE e.job_id IN (SELECT job_id FROM descendants) AND j.store_url IS :store
),
redo AS (
    SELECT a.param_id FROM expected_outputs a
    WHERE a.job_id = :job AND a.output_type = 'aggregation' AND a.state <> 'verified'
      AND NOT EXISTS (SELECT 1 FROM child_outputs c WHERE c.output_type = 'aggregation' AND c.path = a.path
                      AND c.param_id = a.param_id AND (c.state = 'verified'
                          OR c.status IN ('pending','submitting','scheduled','running','validating')))
)
"""

# Simulation outputs to produce: the not-verified ones (minus those a descendant verified since,
# flagging those an unfinished descendant expects) and every replicate of a param set whose
# aggregation is to be redone ('whole'); with each its attempts: the number of jobs of the whole
# resume tree (same store) in which it came back errored.
_PENDING_SQL = _REDO_SQL.rstrip() + """,
tree AS (
    SELECT l.job_id FROM job_lineage l JOIN jobs j USING (job_id)
    WHERE l.root_job_id = (SELECT root_job_id FROM job_lineage WHERE job_id = :job) AND j.store_url IS :store
),
errored AS (
    SELECT path, count(DISTINCT job_id) AS attempts FROM outputs
    WHERE state = 'errored' AND job_id IN (SELECT job_id FROM tree) GROUP BY path
)
SELECT e.param_id, p.params_json, e.bundle_ref, e.entrypoint, e.outputs, e.task_seed, e.run_seed, e.path,
       e.state, coalesce(x.attempts, 0) AS attempts,
       e.state = 'verified' OR EXISTS (SELECT 1 FROM child_outputs c WHERE c.path = e.path
                                       AND c.state = 'verified') AS verified,
       EXISTS (SELECT 1 FROM child_outputs c WHERE c.path = e.path
               AND c.status IN ('pending','submitting','scheduled','running','validating')) AS in_flight,
       e.param_id IN (SELECT param_id FROM redo) AS whole
FROM expected_outputs e JOIN params p USING (param_id) LEFT JOIN errored x ON x.path = e.path
WHERE e.job_id = :job AND e.output_type = 'simulation'
  AND (e.param_id IN (SELECT param_id FROM redo)
       OR (e.state <> 'verified'
           AND NOT EXISTS (SELECT 1 FROM child_outputs c WHERE c.path = e.path AND c.state = 'verified')))
ORDER BY e.output_id
"""


def _pending_rows(ledger: Ledger, args: dict, redo: int, progress) -> Iterator[dict]:
    """_PENDING_SQL's rows as they are read, telling ``progress``. Its bound: the job's outputs not
    verified, or all of them when some param set is redone whole (aggregations, and rows a resume job
    verified since, are not read, so the bar may jump to its end)."""
    if progress is None:
        yield from map(dict, ledger.conn.execute(_PENDING_SQL, args))
        return
    counts = ledger.summary(args["job"])
    total = counts["expected"] if redo else counts["expected"] - counts["verified"]
    progress.start(total)
    cursor, read = ledger.conn.execute(_PENDING_SQL, args), 0
    while chunk := cursor.fetchmany(PROGRESS_STEP):
        yield from map(dict, chunk)
        progress.advance(len(chunk))
        read += len(chunk)
    progress.advance(total - read)


def resume(ledger: Ledger, job_id: str, *, bundle: str | None = None, runtime: str | None = None,
           runtime_options: dict | None = None, submit: bool = True, reasons: Iterable[str] = RESUME_REASONS,
           max_attempts: int = MAX_ATTEMPTS, progress=None) -> Resumed:
    """Register (and submit) the planned children of ``job_id``; record the outputs given up."""
    parent = ledger.job(job_id)
    runtime = runtime or parent["runtime"]
    plan = plan_resume(ledger, job_id, bundle=bundle, runtime=runtime, reasons=reasons,
                       max_attempts=max_attempts, progress=progress)
    _record_given_up(ledger, plan)
    if not plan.jobs:
        if plan.given_up:
            raise LedgerError(f"{job_id}: nothing to resume: {plan.given_up_note()}")
        raise LedgerError(f"{job_id}: nothing to resume (every output is verified or being produced)")
    if submit and not runtime:
        raise LedgerError(f"{job_id} was submitted elsewhere, so its resume jobs need a runtime: "
                          f"`jobledger resume {job_id} --runtime local --bundle-path DIR` runs them here "
                          f"(or --runtime k8s)")
    options = dict(runtime_options or {})
    if runtime == "k8s":
        options.setdefault("namespace", parent["k8s_namespace"])
    if runtime == "local" and parent["runtime"] == "local" and not options.get("bundle_path"):
        options["bundle_path"] = json.loads(parent["runtime_ref"] or "{}").get("bundle_path")
    results = []
    for child in plan.jobs:
        results.append(submit_job(ledger, child, StoredSpec.of(child.to_json()), "simjob", runtime=runtime,
                                  store=parent["store_url"],
                                  layout=parent["layout"], seed_policy=parent["seed_policy"],
                                  parent_job_id=job_id, runtime_options=options,
                                  reason=f"resume of {job_id}", submit=submit))
    return Resumed(plan, results)


def _record_given_up(ledger: Ledger, plan: ResumePlan) -> None:
    """Mark on every job of the resume tree the outputs resume stopped retrying (and unmark those it
    retries again, with a higher --max-attempts), so that ``status`` shows them."""
    with ledger.transaction():
        ledger.conn.execute("CREATE TEMP TABLE IF NOT EXISTS resume_paths (path TEXT PRIMARY KEY, "
                            "given_up INTEGER)")
        ledger.conn.execute("DELETE FROM temp.resume_paths")
        marks = [(p, plan.max_attempts) for p in plan.given_up] + [(p, None) for p in plan.retried]
        ledger.conn.executemany("INSERT OR REPLACE INTO temp.resume_paths VALUES (?, ?)", marks)
        ledger.conn.execute(
            "UPDATE manifest SET given_up_after = r.given_up FROM temp.resume_paths r "
            "WHERE manifest.path = r.path AND manifest.given_up_after IS NOT r.given_up "
            "AND manifest.job_id IN "
            "(SELECT l.job_id FROM job_lineage l WHERE l.root_job_id = "
            " (SELECT root_job_id FROM job_lineage WHERE job_id = ?))", (plan.parent,))
        ledger.conn.execute("DELETE FROM temp.resume_paths")


__all__ = ["PendingTask", "ResumePlan", "Resumed", "ChildTasks", "plan_task_groups", "plan_children",
           "plan_resume", "resume", "root_of", "child_ids", "target_spec_of", "RESUME_REASONS",
           "MAX_ATTEMPTS", "check_reasons"]
