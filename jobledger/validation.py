"""Artifact-driven validation: plan which prefixes to list, observe the store into a TEMP
table, classify every expected output with set-based SQL, then decide the job's status.

Observation streams one row per directory holding files (``has result.json``, ``has
error_details.arrow``, ``has metadata.json``, number of files) into ``temp.listing``; the
classification is one join of the job's outputs with that table. The run row is written first, in
a short transaction of its own (a status move names it); per-output states, state-change events,
unexpected directories and the status transition then commit in one transaction. A store error
before that leaves the ledger unchanged, and so does a registry that refuses the move (the run row
is taken out again).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from . import aggregations, states
from .deep import deep_check
from .errors import JobledgerError
from .layout import ERROR_FILE, ERRORED, INCOMPLETE, MISSING, OUTPUT_STATE_RULES, RESULT_FILE, Layout
from .ledger import Ledger, SpecNeeded, utcnow
from .observe import LISTING_FLAGS, observe
from .redact import redact_url
from .registry.state import Progress, make_progress
from .stores import ProvenanceStore, normalize_store_url, open_store

STRATEGIES = ("auto", "list", "head")
# A head probe tells less than a listing (no unexpected directories) and a listing reads whole
# directories in one go, so auto picks head only when it needs clearly fewer requests.
HEAD_ADVANTAGE = 4
SPLIT_MIN_OUTPUTS = 64          # below this a prefix is listed whole
HEX = "0123456789abcdef"         # the first character of a param shard directory
OUTCOMES = {states.SUCCEEDED: "complete", states.PARTIAL: "partial", states.FAILED: "failed",
            states.CANCELLED: "cancelled"}
# Why a job with nothing to wait for is decided at once (registered without runtime coordinates).
NO_RUNTIME_REASON = "no runtime: decided from the artifacts"


class ValidationError(JobledgerError):
    pass


# ---------------------------------------------------------------- plan

@dataclass
class Plan:
    job_id: str
    store: str
    expected: int
    prefixes: list[str]                      # the fewest prefixes covering every expected output
    parts: list[str]                         # what is listed, in parallel (prefixes split by shard)
    estimates: dict[str, int]                # requests per strategy
    estimate_basis: str
    strategy: str
    reason: str
    notes: list[str] = field(default_factory=list)
    status: str = ""                         # the job's status when planned
    target_dirs: list[str] = field(default_factory=list)  # where the job's aggregations are (its targets)

    def as_dict(self) -> dict:
        return asdict(self)


def _cover_prefixes(ledger: Ledger, job: dict, target_dirs: list[str]) -> list[str]:
    """Directory prefixes under which every expected output lies: the layout's static prefix
    per bundle for simulations, the target directories for aggregations."""
    layout = Layout.parse(job["layout"])
    bundles = [r["bundle_ref"] for r in ledger.query(
        "SELECT DISTINCT bundle_ref FROM expected_outputs WHERE job_id = ? AND output_type = 'simulation'"
        " AND bundle_ref <> ''", (job["job_id"],))]  # '': a result path ModelOps reported, bundle unknown
    prefixes = {layout.static_prefix(b) for b in bundles}
    # An aggregation row's path is its target directory, holding one agg_<id> directory per aggregation.
    prefixes.update(f"{target_dir}/" for target_dir in target_dirs)
    # Outputs outside those prefixes (a custom layout) are covered by their own parent directory.
    # rtrim(path, <every character but '/'>) keeps the path up to its last '/': the parent directory.
    covered = " OR ".join("substr(path, 1, ?) = ?" for _ in prefixes) or "0"
    uncovered = ledger.query(
        f"SELECT DISTINCT rtrim(path, replace(path, '/', '')) AS d FROM outputs "
        f"WHERE job_id = ? AND kind = 'simulation' AND NOT ({covered})",
        [job["job_id"]] + [x for p in sorted(prefixes) for x in (len(p), p)])
    prefixes.update(r["d"] for r in uncovered)
    # Drop a prefix that another one already covers. In sorted order every prefix that starts with q
    # comes right after q, so the last prefix kept is the only one that can cover the next.
    kept: list[str] = []
    for p in sorted(prefixes):
        if not (kept and p.startswith(kept[-1])):
            kept.append(p)
    return kept


def _shape(ledger: Ledger, job_id: str) -> dict:
    """Expected outputs, the names and directories a listing of them would see."""
    return ledger.query(
        "SELECT count(*) AS outputs, "
        " coalesce(sum(2 + CASE WHEN outputs = 'null' THEN 1 ELSE json_array_length(outputs) END), 0)"
        "  AS names, "
        " count(DISTINCT rtrim(path, replace(path, '/', ''))) AS parents "
        "FROM expected_outputs WHERE job_id = ?", (job_id,))[0]


def make_plan(ledger: Ledger, job: dict, store: ProvenanceStore, strategy: str = "auto") -> Plan:
    if strategy not in STRATEGIES:
        raise ValidationError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    job_id = job["job_id"]
    shape = _shape(ledger, job_id)
    expected = shape["outputs"]
    target_dirs = [r["path"] for r in ledger.query(
        "SELECT DISTINCT path FROM outputs WHERE job_id = ? AND kind = 'aggregation'", (job_id,))
    ] if expected else []
    prefixes = _cover_prefixes(ledger, job, target_dirs) if expected else []
    # Only a layout's static prefix ends where the hash-named shard directories begin (a job without a
    # spec is covered by its reported paths' parent directories instead).
    splittable = job["layout"] in ("token", "bundle") and job["spec_format"] is not None
    n = max(1, len(prefixes))
    names, dirs = shape["names"] / n, (expected + 3 * shape["parents"] + 1) / n
    parts: list[str] = []
    list_estimate = 0
    for prefix in prefixes:
        whole = store.list_cost(int(names), int(dirs))
        # Shard directories are hash-named, so 16 hex sub-prefixes cover them and list in parallel.
        if splittable and "/sims/" in prefix and expected >= SPLIT_MIN_OUTPUTS and whole >= 2:
            parts.extend(prefix + c for c in HEX)
            list_estimate += sum(store.list_cost(int(names / 16), int(dirs / 16) + 1) for _ in HEX)
        else:
            parts.append(prefix)
            list_estimate += whole
    basis = "expected outputs"
    previous = ledger.query("SELECT requests FROM validation_runs WHERE job_id = ? AND strategy = 'list' "
                            "AND store_url = ? AND outcome IS NOT NULL AND outcome <> 'error' "
                            "ORDER BY run_id DESC LIMIT 1", (job_id, job["store_url"]))
    if previous:
        list_estimate, basis = previous[0]["requests"], "previous list run"
    estimates = {"list": int(list_estimate), "head": expected}
    if strategy == "auto":
        chosen = "head" if estimates["head"] * HEAD_ADVANTAGE < estimates["list"] else "list"
        why = (f"auto: head needs {estimates['head']} requests, list {estimates['list']} "
               f"(head is chosen below 1/{HEAD_ADVANTAGE} of list)")
    else:
        chosen, why = strategy, f"requested --strategy {strategy}"
    notes = []
    if chosen == "head":
        notes.append("head probes each expected output: unexpected directories are not looked for")
    return Plan(job_id, redact_url(job["store_url"] or ""), expected, prefixes,
                parts if chosen == "list" else [],
                estimates, basis, chosen, why, notes, job["status"], target_dirs)


def _job_to_check(ledger: Ledger, job_id: str) -> dict:
    """The job row, with the store it is checked in: a job ModelOps created without naming its results path
    is looked for in the default store (JOBLEDGER_STORE, MODELOPS_STORAGE_DIR), as ModelOps's own runner
    writes there."""
    job = ledger.job(job_id)
    if job["spec_format"] is None and not job["store_url"]:
        job["store_url"] = normalize_store_url(None)
    return job


def explain(ledger: Ledger, job_id: str, strategy: str = "auto") -> Plan:
    """The plan of a validation (prefixes, estimated requests per strategy, choice); touches nothing."""
    job = _job_to_check(ledger, job_id)
    plan = make_plan(ledger, job, open_store(job["store_url"]), strategy)
    if not plan.expected:
        plan.notes.append(str(SpecNeeded(job_id, "no expected outputs known", "validate"))
                          if job["spec_format"] is None else
                          "the job has no expected outputs: validation would be skipped")
    return plan


# ---------------------------------------------------------------- classify (observe.py and deep.py feed it)

def state_case_sql(listing: str = "l") -> str:
    """layout.output_state as a SQL expression over a ``listing`` row (no row: nothing there)."""
    rules = " ".join(f"WHEN {listing}.{LISTING_FLAGS[name]} THEN '{state}'" for name,
                     state in OUTPUT_STATE_RULES)
    return f"CASE WHEN {listing}.dir IS NULL THEN '{MISSING}' {rules} ELSE '{INCOMPLETE}' END"


CLASSIFY_SQL = f"""
INSERT INTO observed (output_id, state, detail, listing_row)
SELECT output_id, state,
       CASE state WHEN '{ERRORED}' THEN 'the worker wrote {ERROR_FILE}'
                  WHEN '{INCOMPLETE}' THEN 'no {RESULT_FILE} (' || files || ' file'
                       || CASE files WHEN 1 THEN '' ELSE 's' END || ' written)' END,
       listing_row
FROM (SELECT o.output_id, {state_case_sql("l")} AS state, l.files, l.rowid AS listing_row
      FROM outputs o LEFT JOIN listing l ON l.dir = o.path
      WHERE o.job_id = ?)
"""


def classify(ledger: Ledger, job_id: str) -> None:
    """One set-based pass: every expected output of the job gets a state in ``temp.observed``."""
    conn = ledger.conn
    conn.execute("DROP TABLE IF EXISTS temp.observed")
    conn.execute("CREATE TEMP TABLE observed (output_id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
                 "detail TEXT, listing_row INTEGER)")
    conn.execute(CLASSIFY_SQL, (job_id,))


def _counts(ledger: Ledger) -> dict:
    counts = {s: 0 for s in states.OUTPUT_STATES}
    for state, n in ledger.conn.execute("SELECT state, count(*) FROM observed GROUP BY state"):
        counts[state] = n
    counts["expected"] = sum(counts[s] for s in states.OUTPUT_STATES)
    return counts


# ---------------------------------------------------------------- deep checks

# ---------------------------------------------------------------- record and decide

_STRAY = ("(l.has_result OR l.has_metadata OR l.has_error) "
          # listing rows no expected output matched: an anti-join on integers, not on paths
          "AND l.rowid NOT IN (SELECT listing_row FROM observed WHERE listing_row IS NOT NULL) "
          # nor those another output claims: older aggregations of a param set, other jobs' outputs
          "AND l.rowid NOT IN (SELECT listing_row FROM claimed)")


def _claim_what_other_jobs_expect(ledger: Ledger, job: dict) -> None:
    """A result directory another job of the same store expects is that job's, not unexpected here
    (jobs share a store). Looked up only when the listing has directories this job does not
    expect: one pass over the other jobs' outputs, probing the listing's index."""
    conn = ledger.conn
    if conn.execute(f"SELECT 1 FROM listing l WHERE {_STRAY} LIMIT 1").fetchone() is None:
        return
    conn.execute("INSERT OR IGNORE INTO claimed SELECT l.rowid FROM outputs o "
                 "JOIN listing l ON l.dir = o.path "
                 "WHERE o.job_id IN (SELECT job_id FROM jobs WHERE store_url IS ? AND job_id <> ?)",
                 (job["store_url"], job["job_id"]))


def _insert_run(ledger: Ledger, job_id: str, run: dict, counts: dict, *, unexpected_known: bool,
                outcome: str) -> int:
    """Insert the run row, complete and final (a published run never changes), and return its id.
    Call inside transaction()."""
    conn = ledger.conn
    unexpected = conn.execute(f"SELECT count(*) FROM listing l WHERE {_STRAY}").fetchone()[0] \
        if unexpected_known else 0
    cursor = conn.execute(
        "INSERT INTO validation_runs (job_id, started_at, finished_at, store_url, strategy, deep, requests, "
        "expected, verified, missing, errored, incomplete, stale, unexpected, outcome) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (job_id, run["started_at"], utcnow(), run["store"], run["strategy"], int(run["deep"]),
         run["requests"], counts["expected"], counts["verified"], counts["missing"], counts["errored"],
         counts["incomplete"], counts["stale"], unexpected, outcome))
    return int(cursor.lastrowid or 0)


def _record(ledger: Ledger, job_id: str, run_id: int, *, unexpected_known: bool) -> dict:
    """Write what run ``run_id`` observed: per-output states and events, and unexpected paths.
    Call inside transaction()."""
    conn = ledger.conn
    counts = _counts(ledger)
    changed = conn.execute(
        "INSERT INTO output_events (output_id, run_id, from_state, to_state, detail) "
        "SELECT o.output_id, ?, o.state, obs.state, obs.detail FROM observed obs "
        "JOIN outputs o ON o.output_id = obs.output_id WHERE o.state <> obs.state", (run_id,)).rowcount
    # Only outputs whose state or detail changed are written, so a run over an unchanged store
    # costs no row writes. An output present now was seen by this run; one that just went
    # missing was last seen by the job's previous run.
    previous = conn.execute("SELECT max(run_id) FROM validation_runs WHERE job_id = ? AND run_id < ?",
                            (job_id, run_id)).fetchone()[0]
    conn.execute(
        "UPDATE outputs SET state = obs.state, detail = obs.detail, "
        " first_verified_run = CASE WHEN obs.state = 'verified' "
        "                      THEN coalesce(outputs.first_verified_run, :run) "
        "                      ELSE outputs.first_verified_run END, "
        " last_seen_run = CASE WHEN obs.state <> 'missing' THEN :run "
        "                 WHEN outputs.state NOT IN ('missing', 'unchecked') THEN :previous "
        "                 ELSE outputs.last_seen_run END, "
        " state_run = CASE WHEN obs.state <> outputs.state THEN :run ELSE outputs.state_run END "
        "FROM observed obs WHERE outputs.output_id = obs.output_id "
        " AND (obs.state <> outputs.state OR obs.detail IS NOT outputs.detail)",
        {"run": run_id, "previous": previous})
    unexpected = None
    if unexpected_known:
        conn.execute("DELETE FROM unexpected_paths WHERE job_id = ?", (job_id,))
        unexpected = conn.execute(
            f"INSERT INTO unexpected_paths (job_id, path, run_id) SELECT ?, l.dir, ? FROM listing l "
            f"WHERE {_STRAY}",
            (job_id, run_id)).rowcount
    return {**counts, "unexpected": unexpected, "run_id": run_id, "changed": changed}


def _progress(ledger: Ledger, counts: dict) -> Progress:
    """What this run is about to record, in ModelOps's terms (told to the registry with the verdict)."""
    def paths(condition: str):
        return (r[0] for r in ledger.conn.execute(
            f"SELECT o.path FROM observed obs JOIN outputs o ON o.output_id = obs.output_id "
            f"WHERE obs.state {condition} ORDER BY o.output_id"))
    return make_progress(counts, paths("<> 'verified'"), paths("= 'verified'"))


def _drop_temp(ledger: Ledger) -> None:
    if not ledger.conn.in_transaction:
        ledger.conn.execute("DROP TABLE IF EXISTS temp.listing")
        ledger.conn.execute("DROP TABLE IF EXISTS temp.observed")
        ledger.conn.execute("DROP TABLE IF EXISTS temp.claimed")


@dataclass(frozen=True)
class ValidationResult:
    """The ``validate --json`` object: the same keys whether or not the job was re-validated."""
    job_id: str
    status: str
    previous_status: str
    outcome: str                 # complete | partial | failed | cancelled | in-progress | skipped
    expected: int
    verified: int
    missing: int
    errored: int
    incomplete: int
    stale: int                   # aggregations over other inputs than their param set's current replicates
    unexpected: int | None       # None: not looked for (head strategy, or no run yet)
    strategy: str | None         # None when the job was not re-validated
    requests: int
    seconds: float
    run_id: int | None           # this run; None when the job was not re-validated
    last_run_id: int | None      # the job's latest run (this one when validated)
    changed: int                 # outputs whose state this run changed
    transitioned: bool
    validated: bool
    deep: bool
    checksums: bool
    store: str
    prefixes: list[str]
    note: str | None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def exit_code(self) -> int:
        return exit_status(self.expected, self.verified)


def exit_status(expected: int, verified: int) -> int:
    """0 every expected output verified (or nothing to verify), 3 some not verified, 4 none verified."""
    if not expected or verified == expected:
        return 0
    return 3 if verified else 4


def _stored_result(ledger: Ledger, job: dict, note: str, seconds: float) -> ValidationResult:
    """What the ledger already knows, for jobs that are not re-validated."""
    counts = ledger.summary(job["job_id"])
    last = ledger.query("SELECT run_id, unexpected FROM validation_runs WHERE job_id = ? "
                        "ORDER BY run_id DESC LIMIT 1", (job["job_id"],))
    outcome = OUTCOMES.get(job["status"], "skipped" if not counts["expected"] else "in-progress")
    return ValidationResult(
        job["job_id"], job["status"], job["status"], outcome, counts["expected"], counts["verified"],
        counts["missing"], counts["errored"], counts["incomplete"], counts["stale"],
        last[0]["unexpected"] if last else None,
        strategy=None, requests=0, seconds=round(seconds, 3), run_id=None,
        last_run_id=last[0]["run_id"] if last else None, changed=0, transitioned=False, validated=False,
        deep=False, checksums=False, store=redact_url(job["store_url"] or ""), prefixes=[], note=note)


def _opening_reason(ledger: Ledger, job: dict, force: bool, reason: str | None) -> str | None:
    """Why this validation moves the job to ``validating`` to decide it, or None when it only observes
    (a job whose runtime is still to be heard from; a cancelled job, whose status is final)."""
    status = job["status"]
    if status in (states.VALIDATING, states.CANCELLED):
        return None
    if status in states.TERMINAL:
        return reason or f"re-validation requested (--force) after {status}"
    if job["runtime"] is None and status == states.SCHEDULED:
        # Registered as run elsewhere and nothing has reported on it since: nothing to wait for. (A job
        # without runtime that is running was moved so by ModelOps through a registry: it reports.)
        return NO_RUNTIME_REASON
    if not force:
        return None
    last = ledger.query("SELECT reason FROM transitions WHERE job_id = ? ORDER BY transition_id DESC LIMIT 1",
                        (job["job_id"],))
    said = last[0]["reason"] if last and last[0]["reason"] else "nothing"
    return (f"decided from the artifacts on request (validate --force) while {status}; "
            f"the runtime last said: {said}")


def validate_job(ledger: Ledger, job_id: str, *, force: bool = False, strategy: str = "auto",
                 deep: bool = False,
                 checksums: bool = False, progress=None, reason: str | None = None) -> ValidationResult:
    """Validate a job against its store and decide succeeded/partial/failed for a job in
    ``validating``, a job without runtime (nothing to wait for), and with ``force`` any job but a
    cancelled one. A job whose runtime is still to be heard from, and a cancelled job (cancelled
    is final), are only observed; a finished job keeps its verdict unless ``force``.
    ``progress.advance(n)`` (optional) is told how many directories or outputs were looked at."""
    clock = time.monotonic()
    job = _job_to_check(ledger, job_id)
    if strategy not in STRATEGIES:
        raise ValidationError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    deep = deep or checksums
    status = job["status"]
    if status in states.TERMINAL and status != states.CANCELLED and not force:
        return _stored_result(ledger, job, f"{job_id} is {status}; its status is kept (use --force to "
                                           f"re-validate)", time.monotonic() - clock)
    has_outputs = ledger.conn.execute("SELECT 1 FROM outputs WHERE job_id = ? LIMIT 1", (job_id,)).fetchone()
    note = None
    if job["spec_format"] is None:
        # Known only from ModelOps's state.json: its rows are the result paths ModelOps's last validation
        # listed, the outputs we know of. With none, there is nothing to decide on: no verdict, say why.
        if not has_outputs:
            raise SpecNeeded(job_id, "no expected outputs known", "validate")
        note = (f"{job_id} has no spec (ModelOps created it): checked the result paths ModelOps reported, "
                f"in {redact_url(job['store_url'])}")
    elif not has_outputs:
        return _stored_result(ledger, job, f"{job_id} has no expected outputs: validation skipped, status "
                                           f"left at {status}", time.monotonic() - clock)
    opening = _opening_reason(ledger, job, force, reason)
    store = open_store(job["store_url"])
    plan = make_plan(ledger, job, store, strategy)
    started = utcnow()
    try:
        observe(ledger, job_id, store, plan, progress)
        classify(ledger, job_id)
        if deep:
            deep_check(ledger, store, checksums=checksums, progress=progress)
        # after the replicates they aggregate
        aggregations.classify(ledger, job, store, plan.target_dirs, deep=deep)
        if plan.strategy == "list":
            _claim_what_other_jobs_expect(ledger, job)
        run = {"started_at": started, "store": plan.store, "strategy": plan.strategy, "deep": deep,
               "requests": store.requests}
        current = ledger.job(job_id)
        if current["status"] != status and current["status"] in states.TERMINAL and not force:
            # Another process decided it while this one listed the store: its verdict stands and is reported.
            return _stored_result(ledger, current,
                                  f"{job_id} became {current['status']} while it was being validated "
                                  "(another process decided it); this run was not recorded",
                                  time.monotonic() - clock)
        if current["status"] != status:
            opening = _opening_reason(ledger, current, force, reason)
        if opening is not None and current["status"] != states.VALIDATING:
            current = ledger.transition(job_id, states.VALIDATING, opening, revalidate=True)
        counts = _counts(ledger)
        fields = dict(validation_attempts=current["validation_attempts"] + 1, validation_started_at=started,
                      validation_completed_at=utcnow(), last_validation_error=None)
        verdict = states.verdict(counts["expected"], counts["verified"]) \
            if current["status"] == states.VALIDATING else None
        outcome = OUTCOMES.get(verdict or "", "in-progress")
        unexpected_known = plan.strategy == "list"
        recorded: dict = {}
        if verdict is None:
            with ledger.transaction():
                run_id = _insert_run(ledger, job_id, run, counts, unexpected_known=unexpected_known,
                                     outcome=outcome)
                recorded.update(_record(ledger, job_id, run_id, unexpected_known=unexpected_known))
                ledger.update_job(job_id, **fields)
            final = ledger.job(job_id)
        else:
            # The move's reason names the run, and the reason is fixed before the registry swap: the run row
            # goes in first, in a short transaction of its own, so that the id named is the id stored even
            # when other validations write runs to this ledger meanwhile.
            with ledger.transaction():
                run_id = _insert_run(ledger, job_id, run, counts, unexpected_known=unexpected_known,
                                     outcome=outcome)
            summary = (f"{counts['verified']}/{counts['expected']} verified, {counts['missing']} missing, "
                       f"{counts['errored']} errored, {counts['incomplete']} incomplete"
                       + (f", {counts['stale']} stale" if counts["stale"] else "") + f" (run {run_id})")
            try:
                final = ledger.transition(
                    job_id, verdict, f"validated: {summary}" + (f"; {reason}" if reason else ""),
                    with_writes=lambda: recorded.update(_record(ledger, job_id, run_id,
                                                                unexpected_known=unexpected_known)),
                    progress=_progress(ledger, counts), **fields)
            except BaseException as exc:
                # The registry refused or failed (or the move became illegal): keep nothing of this run.
                with ledger.transaction():
                    ledger.conn.execute("DELETE FROM validation_runs WHERE run_id = ?", (run_id,))
                now = ledger.job(job_id)
                if isinstance(exc, states.IllegalTransition) and now["status"] != current["status"]:
                    # Another process on this ledger decided the job first: report its verdict.
                    return _stored_result(ledger, now, f"{job_id} was decided by another process meanwhile "
                                                       f"({now['status']}); this run was not recorded",
                                          time.monotonic() - clock)
                raise
        outcome = OUTCOMES.get(final["status"], "in-progress")
    finally:
        _drop_temp(ledger)
    ledger.notify_changed(job_id)
    return ValidationResult(
        job_id, final["status"], status, outcome, recorded["expected"], recorded["verified"],
        recorded["missing"], recorded["errored"], recorded["incomplete"], recorded["stale"],
        recorded["unexpected"],
        strategy=plan.strategy,
        requests=store.requests, seconds=round(time.monotonic() - clock, 3), run_id=recorded["run_id"],
        last_run_id=recorded["run_id"], changed=recorded["changed"], transitioned=final["status"] != status,
        validated=True, deep=deep, checksums=checksums, store=plan.store, prefixes=plan.prefixes, note=note)


__all__ = ["validate_job", "ValidationResult", "exit_status", "explain", "make_plan", "observe", "classify",
           "deep_check", "Plan", "ValidationError", "STRATEGIES"]
