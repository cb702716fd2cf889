"""Aggregations decided by their inputs.

The ModelOps runner aggregates each param set's replicates as their results came back, errors
included, and names the directory ``agg_<id>`` after the SimReturn task ids it aggregated.
Those ids hash the output names a replicate *returned* (its ``artifact_<name>.*`` files) or
``-error``, so an aggregation's directory is known only once its replicates ran. An expected
aggregation is therefore a (param set, target) row whose path is the target directory, and a
validation decides it from what the listing shows:

- each replicate's current task id comes from its result directory in the listing (the
  returned output names, or the ``-error`` form when it holds error_details.arrow);
- a directory under the target whose result.json lists as ``inputs`` exactly the current task
  ids of all the param set's replicates, each verified, verifies the row (``errored`` when the
  target raised, ``incomplete`` while it has no result.json);
- any other aggregation of the param set (over failed or superseded replicates) makes the row
  ``stale``, with why ("aggregates 1 of 3 ok replicates"): it belongs to its param set, so it
  is not unexpected, and the job is not ``succeeded`` until the aggregation is redone;
- an aggregation of a param set another job of the same store expects is that job's, not
  unexpected here (jobs share a store).

Only the aggregation directories' result.json (and, for ones without it or under ``--deep``,
metadata.json) are read, never a simulation's; a read that outlasts the read timeout leaves its
directory unread (``incomplete``, with what stalled), as deep.timed_map decides. ``classify`` runs
after the simulations are classified, on the temp tables ``listing`` and ``observed`` of
``jobledger.validation``, and fills ``claimed``: the listing rows that belong to an expected output
although no row's path names them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from .contracts import aggregation_id, sim_return_task_id
from .deep import timed_map
from .layout import METADATA_FILE, RESULT_FILE
from .ledger import Ledger
from .limits import READ_TIMEOUT
from .stores import MAX_RESULT_BYTES, ProvenanceStore, StoreNotFound, UnreadableFile

AGG_PREFIX = "agg_"


@dataclass
class Replicate:
    seed: int
    declared: tuple[str, ...] | None
    current: str | None    # the task id its result directory shows now; None without a result
    verified: bool


@dataclass
class AggDir:
    row: int               # rowid in temp.listing
    path: str
    has_result: bool
    has_error: bool
    files: int
    inputs: list[str] | None = None    # result.json "inputs" task ids
    error: str | None = None           # result.json "error", as one line
    first_input: str | None = None     # metadata.json's 'param_id' (the first input's task id[:16])
    problem: str | None = None         # why result.json could not be read
    meta: tuple[Any, str | None] = (None, None)  # --deep: metadata.json, or why it could not be read

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass
class Expected:
    output_id: int
    param_id: str
    target: str
    target_dir: str
    replicates: list[Replicate] = field(default_factory=list)

    def current_ids(self) -> set[str] | None:
        """The task ids of all replicates as they are now; None while one has no result."""
        ids = [r.current for r in self.replicates]
        return {i for i in ids if i is not None} if ids and None not in ids else None

    def ok_ids(self) -> set[str]:
        return {r.current for r in self.replicates if r.verified and r.current}

    def predicted_name(self) -> str | None:
        """The directory the runner writes when it aggregates the replicates as they are now."""
        current = self.current_ids()
        return AGG_PREFIX + aggregation_id(self.target, current) if current else None


def _current_id(param_id: str, seed: int, returned: str | None, has_result, has_error) -> str | None:
    if has_error:
        return sim_return_task_id(param_id, seed, (), error=True)
    if has_result:
        return sim_return_task_id(param_id, seed, returned.split(",") if returned else ())
    return None


def _candidates(param_id: str, replicates: list[Replicate]) -> set[str]:
    """Every task id a replicate of the param set may have returned: what it shows now, its error
    form, and the id of its declared outputs (what an earlier run returned, in the usual case)."""
    ids = {r.current for r in replicates if r.current}
    for r in replicates:
        ids.add(sim_return_task_id(param_id, r.seed, (), error=True))
        if r.declared is not None:
            ids.add(sim_return_task_id(param_id, r.seed, r.declared))
    return ids


def _replicates(ledger: Ledger, job_id: str, *, observed: bool) -> dict[str, list[Replicate]]:
    """The replicates, per param set, of the param sets the job aggregates, with what the listing
    shows of each (this job's through its classification, another job's by path)."""
    verified = "obs.state = 'verified'" if observed else "l.has_result AND NOT l.has_error"
    join = ("LEFT JOIN temp.observed obs ON obs.output_id = o.output_id "
            "LEFT JOIN temp.listing l ON l.rowid = obs.listing_row") if observed else \
        "LEFT JOIN temp.listing l ON l.dir = o.path"
    rows = ledger.conn.execute(
        f"SELECT p.param_id, o.run_seed, t.outputs, l.outputs, l.has_result, l.has_error, "
        f"coalesce({verified}, 0) FROM outputs o JOIN params p ON p.param_key = o.param_key "
        f"JOIN task_templates t ON t.template_id = o.template_id {join} "
        f"WHERE o.job_id = ? AND o.kind = 'simulation' AND o.param_key IN "
        f"(SELECT param_key FROM outputs WHERE job_id = ? AND kind = 'aggregation') ORDER BY o.output_id",
        (job_id, job_id))
    out: dict[str, list[Replicate]] = defaultdict(list)
    for param_id, seed, declared, returned, has_result, has_error, is_verified in rows:
        names = json.loads(declared)
        out[param_id].append(Replicate(int(seed), tuple(names) if names is not None else None,
                                       _current_id(param_id, int(seed), returned, has_result, has_error),
                                       bool(is_verified)))
    return out


def _agg_dirs(ledger: Ledger, target_dir: str) -> list[AggDir]:
    """The aggregation directories the listing saw directly under a target directory."""
    lead = f"{target_dir}/{AGG_PREFIX}"
    rows = ledger.conn.execute(  # a range on the listing's index: every dir starting with ``lead``
        "SELECT rowid, dir, has_result, has_error, files FROM temp.listing WHERE dir >= ? AND dir < ?",
        (lead, lead[:-1] + chr(ord(lead[-1]) + 1)))
    return [AggDir(r[0], r[1], bool(r[2]), bool(r[3]), r[4]) for r in rows if "/" not in r[1][len(lead):]]


def _read(store, agg: AggDir, deep: bool) -> AggDir:
    """A copy of ``agg`` with result.json's inputs and error, and metadata.json's first input when
    result.json is absent or broken (with ``deep``, metadata.json always). A copy, because a reader
    thread left behind by the timeout must not change what the validation goes on with."""
    agg = replace(agg)
    if agg.has_result:
        try:
            doc = json.loads(store.read(f"{agg.path}/{RESULT_FILE}", MAX_RESULT_BYTES))
            agg.inputs = [str(i.get("task_id")) for i in doc.get("inputs") or [] if isinstance(i, dict)]
            error = doc.get("error")
            if isinstance(error, dict):
                agg.error = f"{error.get('error_type', 'Error')}: {error.get('message', '')}"[:300]
            elif error or agg.has_error:
                agg.error = "the target failed (error_details.arrow)"
        except StoreNotFound:
            agg.problem = "result.json disappeared during validation"
        except (ValueError, AttributeError, RecursionError, UnreadableFile):
            agg.problem = "result.json is not a JSON object with 'inputs'"
    if agg.inputs is None or deep:
        agg.meta = _metadata(store, agg)
        meta = agg.meta[0]
        if agg.inputs is None and isinstance(meta, dict):
            agg.first_input = str(meta.get("param_id") or "")
    return agg


def _metadata(store, agg: AggDir) -> tuple[Any, str | None]:
    """(metadata.json's document, None), or (None, why it could not be read)."""
    try:
        return json.loads(store.read(f"{agg.path}/{METADATA_FILE}", MAX_RESULT_BYTES)), None
    except StoreNotFound:
        return None, "metadata.json is missing"
    except (ValueError, RecursionError, UnreadableFile):
        return None, "metadata.json is not valid JSON (or not a regular file within the size limit)"


def _deep_problem(agg: AggDir, expected: Expected, bundle_ref: str) -> str | None:
    """--deep: metadata.json must name the target and the bundle it aggregates for."""
    meta, problem = agg.meta
    if problem:
        return problem
    if not isinstance(meta, dict) or meta.get("target_entrypoint") != expected.target:
        found = meta.get("target_entrypoint") if isinstance(meta, dict) else None
        return f"metadata.json target_entrypoint {found!r} is not {expected.target!r}"
    if meta.get("bundle_ref") != bundle_ref:
        return f"metadata.json bundle_ref {meta.get('bundle_ref')!r} is not {bundle_ref!r}"
    return None


def _decide(expected: Expected, mine: list[AggDir], bundle_ref: str,
            deep: bool) -> tuple[str, str | None, int | None]:
    """(state, detail, listing row of the directory that decides it) for one expected aggregation."""
    n = len(expected.replicates)
    current = expected.current_ids()
    all_ok = current is not None and all(r.verified for r in expected.replicates)
    for agg in mine:
        if current is None or agg.inputs is None or len(agg.inputs) != n or set(agg.inputs) != current:
            continue
        if agg.error:
            return "errored", f"{agg.name}: the target raised {agg.error}", agg.row
        if all_ok:
            problem = _deep_problem(agg, expected, bundle_ref) if deep else None
            if problem:
                return "errored", f"{agg.name}: {problem}", agg.row
            return "verified", agg.name, agg.row
    finished = [a for a in mine if a.inputs is not None]
    if finished:
        def ok(a: AggDir) -> int:
            return len(set(a.inputs or ()) & expected.ok_ids())
        best = max(finished, key=lambda a: (ok(a), a.name))
        others = f", and {len(finished) - 1} more" if len(finished) > 1 else ""
        return "stale", f"aggregates {ok(best)} of {n} ok replicates ({best.name}{others})", None
    if mine:  # only directories without a readable result.json
        predicted = expected.predicted_name()
        agg = next((a for a in mine if a.name == predicted), mine[0])
        why = agg.problem or f"no result.json ({agg.files} file{'s' if agg.files != 1 else ''} written)"
        return "incomplete", f"{agg.name}: {why}", agg.row if agg.name == predicted else None
    return "missing", None, None


class _Owners:
    """Whose an aggregation directory is: by its name (the runner's hash of the replicates as they
    are now), else by its inputs or its metadata's first input among the replicates' possible ids.
    The task ids are computed only when a directory is not one of the predicted names."""

    def __init__(self, replicates: dict[str, list[Replicate]], predicted: dict[tuple[str, str], str]):
        self.replicates = replicates
        self.by_name = predicted
        self._by_id: dict[str, str] | None = None
        self._by_prefix: dict[str, str] = {}

    def of(self, target_dir: str, agg: AggDir) -> str | None:
        owner = self.by_name.get((target_dir, agg.name))
        if owner is not None:
            return owner
        if self._by_id is None:
            self._by_id = {}
            for param_id, reps in self.replicates.items():
                self._by_id.update(dict.fromkeys(_candidates(param_id, reps), param_id))
            self._by_prefix = {task_id[:16]: owner for task_id, owner in self._by_id.items()}
        for task_id in agg.inputs or ():
            if task_id in self._by_id:
                return self._by_id[task_id]
        return self._by_prefix.get(agg.first_input[:16]) if agg.first_input else None


def classify(ledger: Ledger, job: dict, store: ProvenanceStore, target_dirs: list[str], *,
             deep: bool = False, read_timeout: float | None = READ_TIMEOUT) -> int:
    """Decide every expected aggregation of ``job`` (under ``target_dirs``) in ``temp.observed`` and
    fill ``temp.claimed``; returns the number of aggregation directories read. A directory whose read
    outlasts ``read_timeout`` seconds counts as unread, with what stalled."""
    conn = ledger.conn
    conn.execute("DROP TABLE IF EXISTS temp.claimed")
    conn.execute("CREATE TEMP TABLE claimed (listing_row INTEGER PRIMARY KEY)")
    if not target_dirs:
        return 0  # a job without targets
    expected = [Expected(r[0], r[1], r[2], r[3]) for r in conn.execute(
        "SELECT o.output_id, p.param_id, t.entrypoint, o.path FROM outputs o "
        "JOIN params p ON p.param_key = o.param_key JOIN task_templates t ON t.template_id = o.template_id "
        "WHERE o.job_id = ? AND o.kind = 'aggregation' ORDER BY o.output_id", (job["job_id"],))]
    if not expected:
        return 0
    replicates = _replicates(ledger, job["job_id"], observed=True)
    predicted: dict[tuple[str, str], str] = {}
    for e in expected:
        e.replicates = replicates.get(e.param_id, [])
        name = e.predicted_name()
        if name:
            predicted[(e.target_dir, name)] = e.param_id
    listed = {target_dir: _agg_dirs(ledger, target_dir)
              for target_dir in sorted({e.target_dir for e in expected})}
    dirs = [a for group in listed.values() for a in group]
    read = {agg.row: result or replace(agg, problem=stalled, meta=(None, stalled))
            for agg, result, stalled in timed_map(lambda view, a: _read(view, a, deep), dirs, store,
                                                  timeout=read_timeout)}
    found = {target_dir: [read[a.row] for a in group] for target_dir, group in listed.items()}

    owners = _Owners(replicates, predicted)
    by_owner: dict[tuple[str, str], list[AggDir]] = defaultdict(list)
    foreign: list[tuple[str, AggDir]] = []
    for target_dir, group in found.items():
        for agg in group:
            owner = owners.of(target_dir, agg)
            if owner is None:
                foreign.append((target_dir, agg))
            else:
                by_owner[(target_dir, owner)].append(agg)
    decided: list[tuple] = []
    claimed: list[int] = []
    for e in expected:
        mine = by_owner.get((e.target_dir, e.param_id), [])
        state, detail, row = _decide(e, mine, job["bundle_ref"], deep)
        decided.append((state, detail, row, e.output_id))
        claimed.extend(a.row for a in mine)
    if foreign:  # another job of the same store may aggregate the same targets
        others = _Owners(_other_replicates(ledger, job, list(found)), {})
        claimed.extend(a.row for target_dir, a in foreign if others.of(target_dir, a) is not None)
    conn.executemany("UPDATE temp.observed SET state = ?, detail = ?, listing_row = ? WHERE output_id = ?",
                     decided)
    conn.executemany("INSERT OR IGNORE INTO temp.claimed VALUES (?)", ((r,) for r in claimed))
    return len(dirs)


def _other_replicates(ledger: Ledger, job: dict, target_dirs: list[str]) -> dict[str, list[Replicate]]:
    """The replicates other jobs of the same store aggregate under these target directories."""
    marks = ",".join("?" * len(target_dirs))
    others = [r[0] for r in ledger.conn.execute(
        f"SELECT DISTINCT o.job_id FROM outputs o WHERE o.kind = 'aggregation' AND o.path IN ({marks}) "
        f"AND o.job_id IN (SELECT job_id FROM jobs WHERE store_url IS ? AND job_id <> ?)",
        (*target_dirs, job["store_url"], job["job_id"]))]
    out: dict[str, list[Replicate]] = defaultdict(list)
    for other in others:
        for param_id, reps in _replicates(ledger, other, observed=False).items():
            out[param_id].extend(reps)
    return out


__all__ = ["classify"]
