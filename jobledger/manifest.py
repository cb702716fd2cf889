"""Expected outputs of a job: one row per output a worker will write, under a layout and seed policy."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .contracts import ContractError, SimJob, SimTask, aggregation_id, canonical_task_id, sim_return_task_id
from .layout import Layout
from .paths import check_relative

SEED_POLICIES = ("runner", "task")


class ExpectedOutput(NamedTuple):
    kind: str  # simulation | aggregation
    task_id: str  # canonical task id; for an aggregation the id predicted from the declared outputs (or '')
    param_id: str
    bundle_ref: str
    entrypoint: str  # the target entrypoint for an aggregation
    outputs: tuple[str, ...] | None
    task_seed: int | None
    run_seed: int | None
    path: str  # the result directory; for an aggregation its target directory (one row per param set)


def runner_seeds(tasks: tuple[SimTask, ...] | list[SimTask]) -> list[int]:
    """The seed the ModelOps runner really executes for each task, in task order.

    The runner groups tasks by param_id (first-seen order) and runs each group as a
    ReplicateSet of ``group[0].seed + i``, ignoring the later tasks' own seeds.
    """
    first_seed: dict[str, int] = {}
    count: dict[str, int] = {}
    out = []
    for task in tasks:
        pid = task.params.param_id
        base = first_seed.setdefault(pid, task.seed)
        i = count.get(pid, 0)
        count[pid] = i + 1
        out.append(base + i)
    return out


def check_seed_policy(policy: str | None) -> str:
    policy = policy or "runner"
    if policy not in SEED_POLICIES:
        raise ContractError(f"seed policy: {policy!r} is not 'runner' or 'task'")
    return policy


def expected_outputs(job: SimJob, layout: Layout, seed_policy: str = "runner") -> Iterator[ExpectedOutput]:
    """Every output the job's workers will write: simulations, then aggregations."""
    seed_policy = check_seed_policy(seed_policy)
    seeds = runner_seeds(job.tasks) if seed_policy == "runner" else [t.seed for t in job.tasks]
    seen: set[str] = set()
    targets = job.target_entrypoints
    by_param: dict[str, list[tuple[SimTask, int]]] = {}  # only aggregations need it
    path_of: dict[tuple[str, str], Callable[[int], str]] = {}
    for task, seed in zip(job.tasks, seeds, strict=True):
        pid = task.params.param_id
        key = (task.bundle_ref, pid)
        render = path_of.get(key)
        if render is None:
            render = path_of[key] = layout.sim_path_for_param(task.bundle_ref, pid)
            # The bundle_ref and the template fix everything but the seed's digits: one check per set.
            check_relative(render(seed), f"task {task.entrypoint}: output path")
        path = render(seed)
        if seed_policy == "task":
            # Two tasks with the same params and seed write one directory.
            if path in seen:
                continue
            seen.add(path)
        if targets:
            by_param.setdefault(pid, []).append((task, seed))
        task_id = canonical_task_id(task.bundle_ref, task.entrypoint, pid, task.seed)
        yield ExpectedOutput("simulation", task_id, pid, task.bundle_ref, task.entrypoint, task.outputs,
                             task.seed, seed, path)
    if not targets:
        return
    for pid, group in by_param.items():
        # The runner names an aggregation after the task ids its replicates returned, known only once they
        # ran (validation finds it by its inputs); the id predicted from the declared outputs is kept as a
        # hint, '' when a replicate declares none.
        predictable = all(task.outputs is not None for task, _ in group)
        sim_ids = [sim_return_task_id(pid, seed, task.outputs or ()) for task, seed in group]
        for target in targets:
            yield ExpectedOutput("aggregation", aggregation_id(target, sim_ids) if predictable else "", pid,
                                 job.bundle_ref, target, None, None, None,
                                 check_relative(layout.target_dir(job.bundle_ref, target),
                                                f"target {target}: output path"))


def outputs_json(outputs: tuple[str, ...] | None) -> str:
    return json.dumps(list(outputs) if outputs is not None else None, separators=(",", ":"))
