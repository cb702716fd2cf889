"""Resume planning (runner seed runs, child ids), the dry-run contract, and a killed worker resumed."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from helpers import cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_local_runtime import BUNDLE, status_of, submit_local, wait_for_exit

from jobledger import api
from jobledger.contracts import check_job_id, simjob_from_json
from jobledger.layout import Layout
from jobledger.ledger import Ledger
from jobledger.manifest import expected_outputs, runner_seeds
from jobledger.resume import PendingTask, child_ids, plan_children, plan_task_groups, root_of
from jobledger.runtimes.local import process_alive
from jobledger.stores.local import write_result_dir
from jobledger.validation import validate_job

PARAMS = {"a": {"beta": 0.3}, "b": {"beta": 0.4}, "c": {"beta": 0.5}, "d": {"beta": 0.6}}


def pending(param: str, seeds, task_seed_offset=1000, policy="runner") -> list[PendingTask]:
    """Missing outputs at ``seeds``: under ``runner`` tasks had other seeds (the runner ran first + i),
    under ``task`` each output lies at its task's own seed."""
    offset = task_seed_offset if policy == "runner" else 0
    return [PendingTask(param, PARAMS[param], BUNDLE, "models.sir/baseline", ("incidence",), s + offset, s)
            for s in seeds]


def executed(groups) -> dict[str, list[int]]:
    """What the ModelOps runner executes for each planned job, per param set: first seed + i."""
    out: dict[str, list[int]] = {}
    for tasks in groups:
        for task, seed in zip(tasks, runner_seeds(tasks), strict=True):
            out.setdefault(task.param_id, []).append(seed)
    return out


def test_runner_policy_splits_missing_seeds_into_contiguous_runs():
    groups, overcompute = plan_task_groups(pending("a", [16, 10, 13, 11, 17]) + pending("b", [5]), "runner")
    assert overcompute == 0
    assert [[(t.param_id, t.seed) for t in g] for g in groups] == [
        [("a", 10), ("a", 11), ("b", 5)], [("a", 13)], [("a", 16), ("a", 17)]]
    single, over = plan_task_groups(pending("a", [16, 10, 13]), "runner", single_job=True)
    assert [t.seed for t in single[0]] == list(range(10, 17)) and over == 4


def test_task_policy_on_the_modelops_runner_never_puts_two_non_consecutive_seeds_in_one_group():
    # Two non-consecutive task seeds of one param set in one child would run as 3, 4: one job each.
    groups, overcompute = plan_task_groups(pending("a", [3, 9], policy="task"), "task")
    assert [[t.seed for t in g] for g in groups] == [[3], [9]] and overcompute == 0
    assert executed(groups) == {"a": [3, 9]}


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["runner", "task"]),
       st.dictionaries(st.sampled_from(["a", "b"]), st.sets(st.integers(0, 40), min_size=1, max_size=15),
                       min_size=1))
def test_executed_seeds_are_exactly_the_missing_ones_with_the_fewest_jobs(policy, missing):
    rows = [p for param, seeds in missing.items()
            for p in pending(param, sorted(seeds, reverse=True), policy=policy)]
    groups, overcompute = plan_task_groups(rows, policy)
    runs = {param: sum(1 for s in seeds if s - 1 not in seeds) for param, seeds in missing.items()}
    assert len(groups) == max(runs.values())
    ran = executed(groups)
    assert {p: sorted(s) for p, s in ran.items()} == {p: sorted(s) for p, s in missing.items()}
    assert overcompute == sum(len(s) for s in ran.values()) - sum(len(s) for s in missing.values()) == 0


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["runner", "task"]), st.booleans(),
       st.dictionaries(st.sampled_from(["a", "b"]), st.sets(st.integers(0, 40), min_size=1, max_size=15)),
       st.dictionaries(st.sampled_from(["c", "d"]),
                       st.tuples(st.integers(0, 10**6), st.lists(st.booleans(), min_size=1, max_size=6))))
def test_aggregations_to_redo_rerun_their_param_sets_whole_with_exact_overcompute(policy, skips, missing,
                                                                                   whole):
    """Param sets whose aggregation must be redone go whole into one child (with targets); the seeds the
    runner runs are exactly the missing ones plus those sets' replicates, and the over-compute is the
    verified replicates re-run (0 on a runtime that reuses them)."""
    pending_rows = [p for param, seeds in missing.items()
                    for p in pending(param, sorted(seeds), policy=policy)]
    whole_rows = [replace(p, verified=flag) for param, (base, flags) in whole.items()
                  for p, flag in zip(pending(param, range(base, base + len(flags)), policy=policy), flags,
                                     strict=True)]
    children = plan_children(pending_rows, whole_rows, policy, skips_verified=skips)
    assert executed([children.with_targets]) == {p: list(range(b, b + len(f))) for p, (b, f) in whole.items()}
    assert {p: sorted(s) for p, s in executed(children.groups).items()} == \
           {p: sorted(s) for p, s in missing.items()}
    recomputed = sum(f.count(True) for _, f in whole.values())
    ran = sum(len(t) for t in [children.with_targets, *children.groups])
    planned = sum(len(s) for s in missing.values()) + sum(f.count(False) for _, f in whole.values())
    assert ran - planned == recomputed  # the runner recomputes exactly the verified replicates re-run
    assert children.overcompute == (0 if skips else recomputed)
    assert children.notes == []


def test_a_whole_param_set_with_scattered_task_seeds_is_planned_with_a_note():
    rows = [replace(p, verified=True) for p in pending("c", [5, 9], policy="task")]
    children = plan_children([], rows, "task")
    assert [t.seed for t in children.with_targets] == [5, 9] and children.overcompute == 2
    assert children.notes and "not consecutive" in children.notes[0]


def test_child_ids_stay_flat_valid_dns_labels_at_any_depth():
    assert root_of("job-1234abcd-r3") == "job-1234abcd" and root_of("job-1234abcd") == "job-1234abcd"
    existing = ["job-1234abcd", "job-1234abcd-r1", "job-1234abcd-r7", "job-1234abcde-r9"]
    assert child_ids("job-1234abcd", existing, 2) == ["job-1234abcd-r8", "job-1234abcd-r9"]
    lineage = ["calib-0000ffff"]
    for _ in range(120):  # each generation resumes the previous one
        (child,) = child_ids(root_of(lineage[-1]), lineage, 1)
        lineage.append(child)
    assert lineage[-1] == "calib-0000ffff-r120"
    assert all(len(j) <= 63 and check_job_id(j) for j in lineage)


def _registered_partial_job(ledger: Ledger, tmp_path: Path, golden) -> tuple[str, list[dict]]:
    """The golden SimJob registered elsewhere, with its first output verified and its second errored."""
    store = tmp_path / "store"
    store.mkdir()
    api.register(ledger, golden["simjob_spec_example"], store=str(store))
    job_id = golden["simjob_spec_example"]["job_id"]
    rows = ledger.query("SELECT o.path, o.run_seed, p.param_id FROM outputs o JOIN params p USING (param_key) "
                        "WHERE job_id = ? ORDER BY output_id", (job_id,))
    write_result_dir(store / rows[0]["path"], bundle_ref=BUNDLE, entrypoint="m/s", params={},
                     param_id=rows[0]["param_id"], seed=rows[0]["run_seed"], outputs={"incidence": b"1"})
    write_result_dir(store / rows[1]["path"], bundle_ref=BUNDLE, entrypoint="m/s", params={},
                     param_id=rows[1]["param_id"], seed=rows[1]["run_seed"], outputs={}, error={"message": "x"})
    ledger.transition(job_id, "validating", "test: finished")
    assert validate_job(ledger, job_id).status == "partial"
    return job_id, rows


def test_dry_run_json_prints_modelops_specs_and_changes_nothing(ledger, db_path, tmp_path, golden):
    job_id, rows = _registered_partial_job(ledger, tmp_path, golden)
    before = (ledger.query("SELECT count(*) AS n FROM jobs"), ledger.query("SELECT count(*) AS n FROM transitions"))
    plan = json.loads(cli("resume", job_id, "--dry-run", "--json").stdout)
    assert list(plan) == ["parent", "jobs", "outputs", "overcompute", "given_up", "max_attempts", "notes"]
    assert (plan["given_up"], plan["max_attempts"]) == (0, 3)
    assert plan["parent"] == job_id and plan["overcompute"] == 0 and plan["outputs"] == len(rows) - 1
    assert [j["job_id"] for j in plan["jobs"]] == [f"{job_id}-r{n}" for n in range(1, len(plan["jobs"]) + 1)]
    layout = Layout.parse("token")
    planned = set()
    for doc in plan["jobs"]:
        assert list(doc) == ["job_type", "job_id", "bundle_ref", "priority", "metadata", "tasks"]
        child = simjob_from_json(doc)  # every param_id recomputed: a valid ModelOps spec
        planned |= {r.path for r in expected_outputs(child, layout, "runner")}
    assert planned == {r["path"] for r in rows[1:]}  # the errored one included, the verified one not
    assert (ledger.query("SELECT count(*) AS n FROM jobs"), ledger.query("SELECT count(*) AS n FROM transitions")) \
        == before

    other = "sha256:" + "cd" * 32
    moved = json.loads(cli("resume", job_id, "--dry-run", "--json", "--bundle", other).stdout)
    assert {t["bundle_ref"] for j in moved["jobs"] for t in j["tasks"]} == {other}
    moved_paths = {r.path for doc in moved["jobs"] for r in expected_outputs(simjob_from_json(doc), layout, "runner")}
    assert moved_paths.isdisjoint(planned) and len(moved_paths) == len(planned)


def test_resume_refuses_what_it_cannot_do(ledger, db_path, tmp_path, golden):
    job_id, _ = _registered_partial_job(ledger, tmp_path, golden)
    result = cli("resume", job_id, ok=False)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {job_id} was submitted elsewhere, so its resume jobs need a runtime: "
                             f"`jobledger resume {job_id} --runtime local --bundle-path DIR` runs them here "
                             f"(or --runtime k8s)\n")
    api.register(ledger, {**golden["simjob_spec_example"], "job_id": "job-0000beef"}, store=str(tmp_path / "store"))
    result = cli("resume", "job-0000beef", "--dry-run", ok=False)
    assert result.stderr.startswith("error: job-0000beef is scheduled: only partial or failed jobs")
    ledger.transition("job-0000beef", "failed", "test: the runtime gave up")
    result = cli("resume", "job-0000beef", "--dry-run", ok=False)
    assert result.stderr == ("error: job-0000beef is failed but its outputs were never observed; run "
                             "`jobledger validate --force job-0000beef` first so resume knows what is missing\n")


HOLD_MODEL = '''
import os, time, json

def run(params, seed):
    hold = params.get("hold")
    deadline = time.monotonic() + 60
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"incidence": json.dumps([seed]).encode(), "prevalence": b"[]"}
'''


def test_worker_killed_mid_run_ends_partial_and_resume_completes_it(db_path, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "hold").mkdir()
    (bundle / "hold" / "model.py").write_text(HOLD_MODEL)
    release = tmp_path / "release"
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"model": "hold.model", "scenario": "run", "n_replicates": 2,
                                "outputs": ["incidence", "prevalence"],
                                "parameter_sets": [{"x": 1}, {"x": 2, "hold": str(release)}, {"x": 3}]}))
    store = tmp_path / "store"
    job_id = submit_local(spec, store, bundle)
    with Ledger(db_path) as ledger:
        ref = json.loads(ledger.job(job_id)["runtime_ref"])
        rows = ledger.query("SELECT path, run_seed FROM outputs WHERE job_id = ? ORDER BY output_id", (job_id,))
    deadline = time.monotonic() + 30
    while not all((store / r["path"] / "result.json").exists() for r in rows[:2]):
        assert time.monotonic() < deadline, "the first param set never finished"
        time.sleep(0.02)
    os.killpg(ref["pid"], signal.SIGKILL)  # while it waits in the held param set
    while process_alive(ref["pid"], ref["start_time"]):  # SIGKILL is delivered asynchronously
        assert time.monotonic() < deadline
        time.sleep(0.01)

    # What a worker killed while writing leaves behind: a result directory without result.json.
    write_result_dir(store / rows[4]["path"], bundle_ref=BUNDLE, entrypoint="hold.model/run", params={"x": 3},
                     param_id="0" * 64, seed=rows[4]["run_seed"], outputs={"incidence": b"[]"}, complete=False)
    line = cli("sync").stdout.strip()
    assert line == f"{job_id}: scheduled → validating → partial (2 verified, 3 missing, 1 incomplete)"
    history = json.loads(cli("history", job_id, "--json").stdout)
    assert "WorkerVanished" in history[-2]["reason"] and "deciding by artifacts" in history[-2]["reason"]

    release.touch()
    out = cli("resume", job_id).stdout
    assert "resuming 4 output(s) in 1 job(s), over-compute 0" in out
    child = f"{job_id}-r1"
    assert wait_for_exit(db_path, child)["ran"] == 4
    assert cli("sync").stdout.strip() == f"{child}: scheduled → validating → succeeded (4 verified)"
    cli("validate", "--force", job_id)
    assert status_of(job_id)["status"] == "succeeded"
