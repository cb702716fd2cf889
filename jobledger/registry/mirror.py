"""The ledger ↔ registry mirror: JobState JSON, side blobs, compare-and-swap status changes, pull/push.

Per job, under the registry root:

``jobs/<job_id>/state.json``
    ModelOps JobState JSON (the exact ModelOps key set, so ModelOps readers parse it). It stays
    small whatever the job size: ``expected_outputs``/``verified_outputs``/``missing_outputs`` are
    empty lists, the counts live in ``metadata.jobledger.counts``. Everything jobledger-specific
    sits under ``metadata.jobledger`` (format marker, store, layout, seed policy, parent, side-blob
    keys) together with the status history, so that a status change and its history entry are
    one compare-and-swap.
``jobs/<job_id>/manifest.jsonl.gz``
    Immutable, created once: a header line (job constants, the spec, the distinct parameter sets
    and task templates) then one line per expected output in ledger order.
``jobs/<job_id>/observed.json.gz``
    Validation runs, the outputs whose observed state is not the initial 'missing', output
    events and unexpected paths. Updated by compare-and-swap after merging what other machines
    observed: per output, the state decided by the later validation run wins (ties keep
    'verified'), so a verified output is never lost to a stale writer.

A job ModelOps wrote has only ``state.json``: it is imported with no expected outputs.
"""
from __future__ import annotations

import getpass
import gzip
import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import states
from ..ledger import Ledger, UnknownJob, db_seed
from ..timeutil import parse_since, utcnow
from . import MovedElsewhere, RegistryError, VersionedStore

STATE_FORMAT = "jobledger-state/1"
MANIFEST_FORMAT = "jobledger-manifest/1"
OBSERVED_FORMAT = "jobledger-observed/1"

# The JobState fields ModelOps reads and writes, in its order (see the compat doc).
MODELOPS_KEYS = ("job_id", "status", "created_at", "updated_at", "k8s_name", "k8s_namespace", "k8s_uid",
                 "tasks_total", "tasks_completed", "error_message", "error_code", "results_path",
                 "expected_outputs", "verified_outputs", "missing_outputs", "tasks_verified",
                 "validation_started_at", "validation_completed_at", "validation_attempts",
                 "last_validation_error", "metadata")
# Job columns a status change or a pull carries over from the registry.
SHARED_COLUMNS = ("k8s_name", "k8s_namespace", "k8s_uid", "validation_started_at", "validation_completed_at",
                  "validation_attempts", "last_validation_error", "error_message", "error_code")
# Job columns that never change after registration; they travel in the manifest header.
MANIFEST_COLUMNS = ("job_type", "bundle_ref", "runtime", "parent_job_id", "store_url", "layout", "seed_policy",
                    "spec_format", "spec_sha256", "tasks_total", "expected_total", "created_at", "metadata")
RUN_COLUMNS = ("started_at", "finished_at", "store_url", "strategy", "deep", "requests", "expected", "verified",
               "missing", "errored", "incomplete", "unexpected", "outcome", "error")
CAS_ATTEMPTS = 60


def state_key(job_id: str) -> str:
    return f"jobs/{job_id}/state.json"


def manifest_key(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.jsonl.gz"


def observed_key(job_id: str) -> str:
    return f"jobs/{job_id}/observed.json.gz"


def actor() -> str:
    """Who made a move, as shown in conflict messages."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.uniform(0.5, 1.5))


# ------------------------------------------------------------------ state.json

def parse_state(data: bytes, key: str) -> dict:
    """A JobState document, checked enough that importing it cannot write nonsense."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{key}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{key}: not a JobState object (got {type(doc).__name__})")
    for name in ("job_id", "status"):
        if not isinstance(doc.get(name), str):
            raise RegistryError(f"{key}: key {name!r} is missing or not a string")
    if doc["status"] not in states.STATUSES:
        raise RegistryError(f"{key}: key 'status' has unknown value {doc['status']!r}")
    if state_key(doc["job_id"]) != key:
        raise RegistryError(f"{key}: key 'job_id' is {doc['job_id']!r}, which does not match the blob name")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise RegistryError(f"{key}: key 'metadata' is not an object")
    ours = (meta or {}).get("jobledger")
    if ours is not None:
        if not isinstance(ours, dict) or ours.get("format") != STATE_FORMAT:
            raise RegistryError(f"{key}: key 'metadata.jobledger' is not in format {STATE_FORMAT}")
        history = ours.get("transitions")
        if not isinstance(history, list) or not all(
                isinstance(e, list) and len(e) == 5 and e[1] in states.STATUSES for e in history):
            raise RegistryError(f"{key}: key 'metadata.jobledger.transitions' is not a list of "
                                f"[from, to, at, reason, by] entries")
        if not history or history[-1][1] != doc["status"]:
            raise RegistryError(f"{key}: key 'status' ({doc['status']}) disagrees with the last entry of "
                                f"'metadata.jobledger.transitions'")
    return doc


def jobledger_part(doc: dict) -> dict | None:
    """The jobledger extras of a state document; None when ModelOps wrote it."""
    return (doc.get("metadata") or {}).get("jobledger")


def remote_history(doc: dict) -> list[list]:
    ours = jobledger_part(doc)
    return ours["transitions"] if ours else []


def build_state(ledger: Ledger, job: dict, history: list[list]) -> dict:
    """The JobState document for a job row (values may be overridden by the caller) and its history."""
    counts = ledger.summary(job["job_id"])
    verified_sims = ledger.query("SELECT count(*) AS n FROM outputs WHERE job_id = ? AND kind = 'simulation' "
                                 "AND state = 'verified'", (job["job_id"],))[0]["n"]
    user_meta = json.loads(job["metadata"]) if job.get("metadata") else {}
    has_manifest = job.get("spec_format") is not None
    ours = {"format": STATE_FORMAT,
            **{c: job.get(c) for c in ("job_type", "bundle_ref", "runtime", "runtime_ref", "parent_job_id",
                                        "store_url", "layout", "seed_policy", "spec_format", "spec_sha256",
                                        "expected_total")},
            "counts": counts,
            "manifest": manifest_key(job["job_id"]) if has_manifest else None,
            "observed": observed_key(job["job_id"]),
            "transitions": history}
    doc = {"job_id": job["job_id"], "status": job["status"], "created_at": job["created_at"],
           "updated_at": job["updated_at"], "k8s_name": job.get("k8s_name"),
           "k8s_namespace": job.get("k8s_namespace"), "k8s_uid": job.get("k8s_uid"),
           "tasks_total": job.get("tasks_total") or 0, "tasks_completed": verified_sims,
           "error_message": job.get("error_message"), "error_code": job.get("error_code"),
           "results_path": job.get("store_url"),
           # ModelOps lists OutputSpecs here; jobledger keeps the manifest in side blobs (counts in metadata).
           "expected_outputs": [], "verified_outputs": [], "missing_outputs": [],
           "tasks_verified": verified_sims,
           "validation_started_at": job.get("validation_started_at"),
           "validation_completed_at": job.get("validation_completed_at"),
           "validation_attempts": job.get("validation_attempts") or 0,
           "last_validation_error": job.get("last_validation_error"),
           "metadata": {**user_meta, "jobledger": ours}}
    return doc


def encode_state(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, default=str).encode()


def local_history(ledger: Ledger, job_id: str, by: str | None) -> list[list]:
    rows = ledger.query("SELECT from_status, to_status, at, reason FROM transitions WHERE job_id = ? "
                        "ORDER BY transition_id", (job_id,))
    return [[r["from_status"], r["to_status"], r["at"], r["reason"], by] for r in rows]


def merged_history(mine: list[list], theirs: list[list]) -> list[list]:
    """The registry's entries for the moves both know (with who made them), then this ledger's newer ones."""
    return theirs + mine[len(theirs):]


def relation(local: list[list], remote: list[list]) -> str:
    """same | local-ahead | remote-ahead | diverged, comparing the (from, to) moves of two histories."""
    a = [(e[0], e[1]) for e in local]
    b = [(e[0], e[1]) for e in remote]
    if a == b:
        return "same"
    if a[:len(b)] == b:
        return "local-ahead"
    if b[:len(a)] == a:
        return "remote-ahead"
    return "diverged"


def moved_message(job_id: str, doc: dict) -> str:
    history = remote_history(doc)
    if history:
        _, to, at, _, by = history[-1]
        who = f"{by or 'another machine'} moved it to {to} at {at}"
    else:
        who = f"ModelOps has it as {doc['status']} (updated {doc.get('updated_at')})"
    return who


# ------------------------------------------------------------------ side blobs

def build_manifest(ledger: Ledger, job: dict) -> bytes:
    job_id = job["job_id"]
    params: dict[str, int] = {}
    templates: dict[tuple, int] = {}
    lines = []
    cursor = ledger.conn.execute(
        "SELECT o.kind, o.task_id, p.param_id, p.params_json, t.bundle_ref, t.entrypoint, t.outputs, o.task_seed, "
        "o.run_seed, o.path FROM outputs o JOIN params p ON p.param_key = o.param_key "
        "JOIN task_templates t ON t.template_id = o.template_id WHERE o.job_id = ? ORDER BY o.output_id", (job_id,))
    param_json: dict[str, str] = {}
    for kind, task_id, param_id, params_json, bundle_ref, entrypoint, outputs, task_seed, run_seed, path in cursor:
        p = params.setdefault(param_id, len(params))
        param_json.setdefault(param_id, params_json)
        t = templates.setdefault((bundle_ref, entrypoint, outputs), len(templates))
        lines.append(json.dumps([kind[0], task_id, p, t, _int(task_seed), _int(run_seed), path],
                                separators=(",", ":")))
    header = {"format": MANIFEST_FORMAT, "job_id": job_id, "job": {c: job[c] for c in MANIFEST_COLUMNS},
              "spec": ledger.spec_of(job_id), "params": [[pid, param_json[pid]] for pid in params],
              "templates": [list(t) for t in templates], "outputs": len(lines)}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False) + "\n" + "\n".join(lines)
    return gzip.compress(text.encode(), 6)


def parse_manifest(data: bytes, key: str) -> tuple[dict, list[list]]:
    try:
        text = gzip.decompress(data).decode()
        first, _, rest = text.partition("\n")
        header = json.loads(first)
        rows = [json.loads(line) for line in rest.splitlines() if line]
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{key}: not a gzip JSON-lines manifest ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != MANIFEST_FORMAT:
        raise RegistryError(f"{key}: key 'format' is not {MANIFEST_FORMAT}")
    if header.get("outputs") != len(rows):
        raise RegistryError(f"{key}: truncated ({len(rows)} of {header.get('outputs')} outputs)")
    return header, rows


def dump_observed(ledger: Ledger, job_id: str) -> dict:
    runs = ledger.query(f"SELECT run_id, {', '.join(RUN_COLUMNS)} FROM validation_runs WHERE job_id = ? "
                        f"ORDER BY started_at, finished_at, run_id", (job_id,))
    run_index = {r["run_id"]: i for i, r in enumerate(runs)}

    def ref(run_id):
        return run_index.get(run_id)

    outputs = [[r["idx"], r["state"], r["detail"], ref(r["first_verified_run"]), ref(r["last_seen_run"]),
                ref(r["state_run"])]
               for r in ledger.query(
                   "SELECT idx, state, detail, first_verified_run, last_seen_run, state_run FROM ("
                   " SELECT row_number() OVER (ORDER BY output_id) - 1 AS idx, * FROM outputs WHERE job_id = ?)"
                   " WHERE state <> 'missing' OR detail IS NOT NULL OR first_verified_run IS NOT NULL"
                   " OR last_seen_run IS NOT NULL OR state_run IS NOT NULL ORDER BY idx", (job_id,))]
    events = [[r["idx"], ref(r["run_id"]), r["from_state"], r["to_state"], r["detail"]]
              for r in ledger.query(
                  "SELECT i.idx, e.run_id, e.from_state, e.to_state, e.detail FROM output_events e JOIN ("
                  " SELECT output_id, row_number() OVER (ORDER BY output_id) - 1 AS idx FROM outputs WHERE job_id = ?)"
                  " i USING (output_id) ORDER BY e.rowid", (job_id,))]
    unexpected = [[r["path"], ref(r["run_id"])] for r in ledger.query(
        "SELECT path, run_id FROM unexpected_paths WHERE job_id = ? ORDER BY path", (job_id,))]
    return {"format": OBSERVED_FORMAT, "job_id": job_id,
            "runs": [[r[c] for c in RUN_COLUMNS] for r in runs],
            "outputs": outputs, "events": events, "unexpected": unexpected}


def encode_observed(doc: dict) -> bytes:
    return gzip.compress(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), 6)


def parse_observed(data: bytes, key: str) -> dict:
    try:
        doc = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{key}: not gzip JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != OBSERVED_FORMAT:
        raise RegistryError(f"{key}: key 'format' is not {OBSERVED_FORMAT}")
    for name in ("runs", "outputs", "events", "unexpected"):
        if not isinstance(doc.get(name), list):
            raise RegistryError(f"{key}: key {name!r} is missing or not a list")
    return doc


def merge_observed(ledger: Ledger, job_id: str, remote: dict) -> None:
    """Fold another machine's observations into the local rows (call inside a transaction).

    Runs are matched by their columns; per output the state set by the later run wins (a tie keeps
    'verified'); first-verified keeps the earliest known run, last-seen the latest.
    """
    conn = ledger.conn
    # A run has no id shared between ledgers: it is known by all its columns. Validation writes a run
    # in one transaction, so a published run never changes afterwards; two runs equal in every column
    # (same start and end to the millisecond, same counts) say the same thing and are kept once.
    local_runs = {tuple(r[c] for c in RUN_COLUMNS): r["run_id"] for r in ledger.query(
        f"SELECT run_id, {', '.join(RUN_COLUMNS)} FROM validation_runs WHERE job_id = ?", (job_id,))}
    run_ids: list[int] = []
    for values in remote["runs"]:
        identity = tuple(values)
        run_id = local_runs.get(identity)
        if run_id is None:
            run_id = conn.execute(f"INSERT INTO validation_runs (job_id, {', '.join(RUN_COLUMNS)}) "
                                  f"VALUES (?, {', '.join('?' * len(RUN_COLUMNS))})",
                                  (job_id, *values)).lastrowid
            local_runs[identity] = run_id
        run_ids.append(run_id)

    def run(i):
        return run_ids[i] if i is not None else None

    # Staged rows are keyed by output_id (a primary key) so that the updates below are index lookups.
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_index (idx INTEGER PRIMARY KEY, output_id INTEGER)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_staged (idx INTEGER PRIMARY KEY, state TEXT, detail TEXT,"
                 " fv INTEGER, ls INTEGER, sr INTEGER)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_observed (output_id INTEGER PRIMARY KEY, state TEXT,"
                 " detail TEXT, fv INTEGER, ls INTEGER, sr INTEGER, sr_at TEXT, fv_at TEXT, ls_at TEXT)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_events (idx INTEGER, run_id INTEGER, from_state TEXT,"
                 " to_state TEXT, detail TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.mirror_events_idx ON mirror_events (idx)")
    for table in ("mirror_index", "mirror_staged", "mirror_observed", "mirror_events"):
        conn.execute(f"DELETE FROM temp.{table}")
    conn.execute("INSERT INTO temp.mirror_index SELECT row_number() OVER (ORDER BY output_id) - 1, output_id "
                 "FROM outputs WHERE job_id = ?", (job_id,))
    conn.executemany("INSERT INTO temp.mirror_staged VALUES (?,?,?,?,?,?)",
                     ((i, state, detail, run(fv), run(ls), run(sr)) for i, state, detail, fv, ls, sr in remote["outputs"]))
    conn.execute("INSERT INTO temp.mirror_observed SELECT x.output_id, r.state, r.detail, r.fv, r.ls, r.sr, "
                 "coalesce(rs.started_at, ''), fv.started_at, ls.started_at FROM temp.mirror_staged r "
                 "JOIN temp.mirror_index x USING (idx) LEFT JOIN validation_runs rs ON rs.run_id = r.sr "
                 "LEFT JOIN validation_runs fv ON fv.run_id = r.fv LEFT JOIN validation_runs ls ON ls.run_id = r.ls")
    conn.execute("""
        UPDATE outputs SET state = m.state, detail = m.detail, state_run = m.sr
        FROM temp.mirror_observed m
        WHERE outputs.output_id = m.output_id
          AND (outputs.state IS NOT m.state OR outputs.detail IS NOT m.detail OR outputs.state_run IS NOT m.sr)
          AND (m.sr_at > coalesce((SELECT started_at FROM validation_runs WHERE run_id = outputs.state_run), '')
               OR (m.sr_at = coalesce((SELECT started_at FROM validation_runs WHERE run_id = outputs.state_run), '')
                   AND m.state = 'verified' AND outputs.state <> 'verified'))""")
    conn.execute("""
        UPDATE outputs SET
          first_verified_run = CASE WHEN outputs.first_verified_run IS NULL
              OR m.fv_at < (SELECT started_at FROM validation_runs WHERE run_id = outputs.first_verified_run)
              THEN coalesce(m.fv, outputs.first_verified_run) ELSE outputs.first_verified_run END,
          last_seen_run = CASE WHEN outputs.last_seen_run IS NULL
              OR m.ls_at > (SELECT started_at FROM validation_runs WHERE run_id = outputs.last_seen_run)
              THEN coalesce(m.ls, outputs.last_seen_run) ELSE outputs.last_seen_run END
        FROM temp.mirror_observed m
        WHERE outputs.output_id = m.output_id AND (m.fv IS NOT NULL OR m.ls IS NOT NULL)""")
    conn.executemany("INSERT INTO temp.mirror_events VALUES (?,?,?,?,?)",
                     ((i, run(r), a, b, d) for i, r, a, b, d in remote["events"]))
    conn.execute("INSERT INTO output_events (output_id, run_id, from_state, to_state, detail) "
                 "SELECT x.output_id, e.run_id, e.from_state, e.to_state, e.detail "
                 "FROM temp.mirror_events e JOIN temp.mirror_index x USING (idx) "
                 "WHERE NOT EXISTS (SELECT 1 FROM output_events o WHERE o.output_id = x.output_id "
                 # '+' keeps SQLite on the per-output index: one run has an event for every output
                 "AND +o.run_id = e.run_id AND o.to_state = e.to_state)")
    if remote["unexpected"]:
        newest_remote = max((remote["runs"][r][0] for _, r in remote["unexpected"] if r is not None), default="")
        newest_local = conn.execute("SELECT max(v.started_at) FROM unexpected_paths u JOIN validation_runs v "
                                    "USING (run_id) WHERE u.job_id = ?", (job_id,)).fetchone()[0] or ""
        if newest_remote >= newest_local:
            conn.execute("DELETE FROM unexpected_paths WHERE job_id = ?", (job_id,))
            conn.executemany("INSERT OR IGNORE INTO unexpected_paths (job_id, path, run_id) VALUES (?,?,?)",
                             ((job_id, path, run(r)) for path, r in remote["unexpected"] if r is not None))


def _int(seed):
    return int(seed) if seed is not None else None


def _same_observations(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("runs", "outputs", "events", "unexpected"))


# ------------------------------------------------------------------ importing into a ledger

def import_state(ledger: Ledger, doc: dict) -> None:
    """Bring an existing local job to the registry's status, history and shared columns (inside a transaction)."""
    job_id = doc["job_id"]
    job = ledger.job(job_id)
    history = remote_history(doc)
    have = ledger.conn.execute("SELECT count(*) FROM transitions WHERE job_id = ?", (job_id,)).fetchone()[0]
    if history:
        new_moves = history[have:]
    elif doc["status"] != job["status"]:
        new_moves = [[job["status"], doc["status"], doc.get("updated_at") or utcnow(),
                      "imported from registry (written by ModelOps)", None]]
    else:
        new_moves = []
    ledger.conn.executemany("INSERT INTO transitions (job_id, from_status, to_status, at, reason) VALUES (?,?,?,?,?)",
                            ((job_id, a, b, at, reason) for a, b, at, reason, _ in new_moves))
    columns = {c: doc.get(c) for c in SHARED_COLUMNS}
    columns["validation_attempts"] = columns["validation_attempts"] or 0
    ours = jobledger_part(doc)
    if ours:
        columns["runtime_ref"] = ours.get("runtime_ref")
    ledger.conn.execute(f"UPDATE jobs SET status = ?, updated_at = ?, {', '.join(f'{c} = ?' for c in columns)} "
                        f"WHERE job_id = ?", (doc["status"], doc.get("updated_at") or utcnow(), *columns.values(),
                                              job_id))


def insert_from_registry(ledger: Ledger, doc: dict, manifest: tuple[dict, list[list]] | None) -> int:
    """Create a local job from its registry state (+ manifest); returns the number of expected outputs."""
    job_id = doc["job_id"]
    conn = ledger.conn
    ours = jobledger_part(doc) or {}
    if manifest is not None:
        header, rows = manifest
        constants = dict(header["job"])
        spec_gz = gzip.compress(json.dumps(header["spec"], sort_keys=True, separators=(",", ":")).encode(), 6)
    else:
        header, rows = None, []
        constants = {"job_type": "calibration" if job_id.startswith("calib-") else "simulation",
                     "bundle_ref": ours.get("bundle_ref"), "runtime": None, "parent_job_id": None,
                     "store_url": doc.get("results_path"), "layout": ours.get("layout") or "token",
                     "seed_policy": ours.get("seed_policy") or "runner", "spec_format": None, "spec_sha256": None,
                     "tasks_total": doc.get("tasks_total") or 0, "expected_total": 0,
                     "created_at": doc.get("created_at") or utcnow(),
                     "metadata": json.dumps({k: v for k, v in (doc.get("metadata") or {}).items()
                                             if k != "jobledger"})}
        spec_gz = None
    if constants.get("parent_job_id") and not ledger.job_exists(constants["parent_job_id"]):
        constants["parent_job_id"] = None  # the caller pulls parents first; an absent parent stays unlinked
    columns = {**constants, "job_id": job_id, "status": doc["status"], "updated_at": doc.get("updated_at") or utcnow(),
               "spec_gz": spec_gz, "runtime_ref": ours.get("runtime_ref"),
               **{c: doc.get(c) for c in SHARED_COLUMNS}}
    columns["validation_attempts"] = columns["validation_attempts"] or 0
    conn.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                 tuple(columns.values()))
    if header is not None:
        conn.executemany("INSERT OR IGNORE INTO params (param_id, params_json) VALUES (?, ?)", header["params"])
        conn.executemany("INSERT OR IGNORE INTO task_templates (bundle_ref, entrypoint, outputs) VALUES (?,?,?)",
                         header["templates"])
        param_keys = [_lookup(conn, "SELECT param_key FROM params WHERE param_id = ?", (pid,))
                      for pid, _ in header["params"]]
        template_keys = [_lookup(conn, "SELECT template_id FROM task_templates WHERE bundle_ref = ? AND "
                                       "entrypoint = ? AND outputs = ?", tuple(t)) for t in header["templates"]]
        kinds = {"s": "simulation", "a": "aggregation"}
        conn.executemany(
            "INSERT INTO outputs (job_id, kind, task_id, param_key, template_id, task_seed, run_seed, path) "
            "VALUES (?,?,?,?,?,?,?,?)",
            ((job_id, kinds[k], task_id, param_keys[p], template_keys[t], db_seed(ts), db_seed(rs), path)
             for k, task_id, p, t, ts, rs, path in rows))
    history = remote_history(doc) or [[None, doc["status"], doc.get("updated_at") or utcnow(),
                                       "imported from registry (written by ModelOps, no manifest)", None]]
    conn.executemany("INSERT INTO transitions (job_id, from_status, to_status, at, reason) VALUES (?,?,?,?,?)",
                     ((job_id, a, b, at, reason) for a, b, at, reason, _ in history))
    return len(rows)


def _lookup(conn, sql: str, args: tuple) -> int:
    return conn.execute(sql, args).fetchone()[0]


# ------------------------------------------------------------------ the mirror

@dataclass
class PullResult:
    job_id: str
    action: str  # imported | updated | unchanged | failed
    status: str | None = None
    expected: int | None = None
    note: str | None = None


@dataclass
class PushResult:
    job_id: str
    status: str
    note: str | None = None


@dataclass
class Mirror:
    """What a Ledger consults before a status change and informs after a command commits."""

    store: VersionedStore
    by: str = field(default_factory=actor)

    @property
    def url(self) -> str:
        return self.store.url

    # -------------------------------------------------------- the Ledger hooks

    def accept_transition(self, ledger: Ledger, job: dict, to_status: str, reason: str, fields: dict) -> dict | None:
        """Compare-and-swap the move into state.json before the local write (inside its transaction).

        Returns the local job row to move from: the same row, a row refreshed from the registry
        (when another machine moved it further, legally), or a row already at ``to_status`` (when
        another machine made this very move: nothing is left to write).
        """
        job_id = job["job_id"]
        key = state_key(job_id)
        revalidate = to_status == states.VALIDATING and job["status"] in states.REVALIDATABLE
        conn = ledger.conn
        for attempt in range(CAS_ATTEMPTS):
            got = self.store.get(key)
            if got is None:
                self._create(ledger, job)
                continue
            data, version = got
            remote = parse_state(data, key)
            self._check_same_job(ledger, job, remote, key)
            theirs = remote_history(remote)
            where = relation(local_history(ledger, job_id, self.by), theirs) if jobledger_part(remote) else (
                "same" if remote["status"] == job["status"] else "remote-ahead")
            if where == "diverged":
                raise RegistryError(f"job {job_id}: the registry's history differs from this ledger's "
                                    f"({moved_message(job_id, remote)}); run `jobledger pull {job_id}`")
            if where == "remote-ahead":
                if remote["status"] == to_status:
                    import_state(ledger, remote)  # another machine made this very move
                    return ledger.job(job_id)
                if not states.is_legal(remote["status"], to_status,
                                       revalidate=revalidate and remote["status"] in states.REVALIDATABLE):
                    raise MovedElsewhere(f"job {job_id}: {moved_message(job_id, remote)}; not moving it to "
                                         f"{to_status} (run `jobledger pull {job_id}` to refresh)",
                                         job_id, remote["status"])
                import_state(ledger, remote)
                job = ledger.job(job_id)
            # Write the move locally inside a savepoint, publish exactly that row, undo it if the swap loses:
            # local and registry then agree to the millisecond on updated_at and the history.
            conn.execute("SAVEPOINT mirror_move")
            try:
                moved = ledger.write_transition(job, to_status, reason, fields)
                doc = build_state(ledger, moved, merged_history(local_history(ledger, job_id, self.by), theirs))
                accepted = self.store.put(key, encode_state(doc), version)
            except BaseException:
                conn.execute("ROLLBACK TO mirror_move")
                conn.execute("RELEASE mirror_move")
                raise
            if accepted:
                conn.execute("RELEASE mirror_move")
                return moved
            conn.execute("ROLLBACK TO mirror_move")
            conn.execute("RELEASE mirror_move")
            _backoff(attempt)
        raise RegistryError(f"{key}: still changing after {CAS_ATTEMPTS} attempts; try again")

    def publish(self, ledger: Ledger, job_id: str) -> None:
        """After a command committed: create what is missing, merge observations, refresh state.json."""
        job = ledger.job(job_id)
        key = state_key(job_id)
        got = self.store.get(key)
        if got is None:
            self._create(ledger, job)
            got = self.store.get(key)
            if got is None:
                raise RegistryError(f"{key}: disappeared right after it was created")
        self._check_same_job(ledger, job, parse_state(got[0], key), key)
        if job["spec_format"] is not None and not jobledger_part(parse_state(got[0], key)):
            self._ensure_manifest(ledger, job)  # a job ModelOps created that jobledger now knows in full
        self.sync_observed(ledger, job_id)
        self._refresh_state(ledger, job_id)

    # -------------------------------------------------------- pieces

    def _create(self, ledger: Ledger, job: dict) -> None:
        """First publication of a job: manifest, observations, then state.json (readers start there)."""
        job_id = job["job_id"]
        if job["spec_format"] is not None:
            self._ensure_manifest(ledger, job)
        observed = dump_observed(ledger, job_id)
        if observed["runs"]:
            if not self.store.create_if_absent(observed_key(job_id), encode_observed(observed)):
                self.sync_observed(ledger, job_id)
        doc = build_state(ledger, job, local_history(ledger, job_id, self.by))
        self.store.create_if_absent(state_key(job_id), encode_state(doc))

    def _ensure_manifest(self, ledger: Ledger, job: dict) -> None:
        key = manifest_key(job["job_id"])
        if self.store.create_if_absent(key, build_manifest(ledger, job)):
            return
        got = self.store.get(key)
        if got is not None:
            header, _ = parse_manifest(got[0], key)
            if header["job"].get("spec_sha256") != job["spec_sha256"]:
                raise RegistryError(f"{key}: the registry holds a different job {job['job_id']} "
                                    f"(spec differs from the local one)")

    @staticmethod
    def _check_same_job(ledger: Ledger, job: dict, remote: dict, key: str) -> None:
        ours = jobledger_part(remote)
        if ours and job["spec_sha256"] and ours.get("spec_sha256") and ours["spec_sha256"] != job["spec_sha256"]:
            raise RegistryError(f"{key}: the registry holds a different job {job['job_id']} "
                                f"(spec differs from the local one)")

    def sync_observed(self, ledger: Ledger, job_id: str) -> None:
        key = observed_key(job_id)
        for attempt in range(CAS_ATTEMPTS):
            got = self.store.get(key)
            remote = parse_observed(got[0], key) if got else None
            if remote is not None:
                with ledger.transaction():
                    merge_observed(ledger, job_id, remote)
            local = dump_observed(ledger, job_id)
            if remote is not None and _same_observations(local, remote):
                return
            if remote is None and not local["runs"]:
                return  # nothing observed anywhere yet
            data = encode_observed(local)
            if (self.store.put(key, data, got[1]) if got else self.store.create_if_absent(key, data)):
                return
            _backoff(attempt)
        raise RegistryError(f"{key}: still changing after {CAS_ATTEMPTS} attempts; try again")

    def _refresh_state(self, ledger: Ledger, job_id: str) -> None:
        """Write the local job's current columns and counts into state.json, never moving the status back."""
        key = state_key(job_id)
        resynced = False
        for attempt in range(CAS_ATTEMPTS):
            got = self.store.get(key)
            if got is None:
                self._create(ledger, ledger.job(job_id))
                continue
            remote = parse_state(got[0], key)
            job = ledger.job(job_id)
            theirs = remote_history(remote)
            if jobledger_part(remote):
                where = relation(local_history(ledger, job_id, self.by), theirs)
            else:
                where = "local-ahead" if remote["status"] == job["status"] or \
                    states.is_legal(remote["status"], job["status"]) else "remote-ahead"
            if where == "diverged":
                raise RegistryError(f"job {job_id}: the registry's history differs from this ledger's "
                                    f"({moved_message(job_id, remote)}); run `jobledger pull {job_id}`")
            if where == "remote-ahead" or (where == "same" and (remote.get("updated_at") or "") > job["updated_at"]):
                with ledger.transaction():
                    import_state(ledger, remote)
            mine = merged_history(local_history(ledger, job_id, self.by), theirs)
            doc = build_state(ledger, ledger.job(job_id), mine)
            if _comparable(doc) == _comparable(remote):
                return
            if _counts(doc) != _counts(remote) and not resynced:
                # Writers publish observations before state.json: fold in what was published since our
                # last merge, so that our counts are never older than the ones we would overwrite.
                self.sync_observed(ledger, job_id)
                resynced = True
                continue
            if self.store.put(key, encode_state(doc), got[1]):
                return
            resynced = False
            _backoff(attempt)
        raise RegistryError(f"{key}: still changing after {CAS_ATTEMPTS} attempts; try again")

    # -------------------------------------------------------- commands

    def job_ids(self) -> list[str]:
        return sorted(k.split("/")[1] for k in self.store.list_keys("jobs/")
                      if k.count("/") == 2 and k.endswith("/state.json"))

    def pull_job(self, ledger: Ledger, job_id: str, since: str | None = None, _depth: int = 0) -> PullResult | None:
        key = state_key(job_id)
        got = self.store.get(key)
        if got is None:
            raise RegistryError(f"{key}: not in registry {self.url}")
        remote = parse_state(got[0], key)
        if since and (remote.get("updated_at") or "") < since:
            return None
        ours = jobledger_part(remote)
        observed_blob = self.store.get(observed_key(job_id)) if ours else None
        observed = parse_observed(observed_blob[0], observed_key(job_id)) if observed_blob else None
        if not ledger.job_exists(job_id):
            manifest = None
            if ours and ours.get("manifest"):
                blob = self.store.get(ours["manifest"])
                if blob is None:
                    raise RegistryError(f"{ours['manifest']}: missing (state.json names it)")
                manifest = parse_manifest(blob[0], ours["manifest"])
                parent = manifest[0]["job"].get("parent_job_id")
                if parent and not ledger.job_exists(parent) and _depth < 64:
                    try:
                        self.pull_job(ledger, parent, None, _depth + 1)
                    except RegistryError:
                        pass  # imported unlinked; the parent is not in the registry
            with ledger.transaction():
                count = insert_from_registry(ledger, remote, manifest)
                if observed:
                    merge_observed(ledger, job_id, observed)
            note = None if manifest else "written by ModelOps: imported with no expected outputs (no manifest)"
            return PullResult(job_id, "imported", remote["status"], count, note)
        job = ledger.job(job_id)
        self._check_same_job(ledger, job, remote, key)
        before = (job, ledger.summary(job_id), len(ledger.transitions(job_id)))
        note = None
        with ledger.transaction():
            if observed:
                merge_observed(ledger, job_id, observed)
            where = relation(local_history(ledger, job_id, None), remote_history(remote)) if ours else (
                "same" if remote["status"] == job["status"] else "remote-ahead")
            if where == "remote-ahead" or (where == "same" and (remote.get("updated_at") or "") > job["updated_at"]):
                import_state(ledger, remote)
            elif where == "local-ahead":
                note = "this ledger is ahead of the registry: run `jobledger push`"
            elif where == "diverged":
                note = f"histories differ ({moved_message(job_id, remote)}); status kept"
        after = (ledger.job(job_id), ledger.summary(job_id), len(ledger.transitions(job_id)))
        return PullResult(job_id, "updated" if after != before else "unchanged", after[0]["status"],
                          after[1]["expected"], note)


def _counts(doc: dict) -> dict | None:
    return (jobledger_part(doc) or {}).get("counts")


def _comparable(doc: dict) -> dict:
    """A state document without the fields that differ only in who wrote it."""
    out = dict(doc)
    meta = dict(out.get("metadata") or {})
    ours = dict(meta.get("jobledger") or {})
    ours["transitions"] = [e[:4] for e in ours.get("transitions", [])]
    meta["jobledger"] = ours
    out["metadata"] = meta
    return out


# ------------------------------------------------------------------ API functions

def _mirror_of(ledger: Ledger) -> Mirror:
    if ledger.mirror is None:
        raise RegistryError("no registry configured: pass --registry URL or set JOBLEDGER_REGISTRY")
    return ledger.mirror


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
    ids = list(job_ids) or [r["job_id"] for r in ledger.query("SELECT job_id FROM jobs ORDER BY created_at, job_id")]
    results = []
    for job_id in ids:
        ledger.job(job_id)
        mirror.publish(ledger, job_id)
        job = ledger.job(job_id)
        results.append(PushResult(job_id, job["status"]))
        if progress:
            progress(1)
    return results


__all__ = ["Mirror", "PullResult", "PushResult", "pull", "push", "parse_state", "build_state", "state_key",
           "manifest_key", "observed_key", "MODELOPS_KEYS", "STATE_FORMAT", "UnknownJob"]
