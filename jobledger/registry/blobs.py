"""The side blobs of a job in the registry: the manifest (written once) and the observations (merged).

``jobs/<job_id>/manifest.jsonl.gz``
    Immutable, created once: a header line (job constants, the spec, the distinct parameter sets
    and task templates) then one line per expected output in ledger order.
``jobs/<job_id>/observed.json.gz``
    Validation runs, the outputs whose state is not the initial 'unchecked', output
    events and unexpected paths. Updated by compare-and-swap after merging what other machines
    observed: per output, the state decided by the later validation run wins (ties keep
    'verified'), so a verified output is never lost to a stale writer.
"""
from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..contracts import SEED_MAX
from ..errors import JobledgerError
from ..layout import Layout
from ..ledger import Ledger
from ..limits import env_int
from ..manifest import SEED_POLICIES, ExpectedOutput
from ..paths import unsafe_reason
from ..redact import refuse_sas
from ..states import OUTPUT_STATES
from .base import RegistryError, check_fields, check_text

MANIFEST_FORMAT = "jobledger-manifest/1"
OBSERVED_FORMAT = "jobledger-observed/1"
# Job columns that never change after registration; they travel in the manifest header.
MANIFEST_COLUMNS = ("job_type", "bundle_ref", "runtime", "parent_job_id", "store_url", "layout",
                    "seed_policy", "spec_format", "spec_sha256", "tasks_total", "expected_total",
                    "created_at", "metadata")
RUN_COLUMNS = ("started_at", "finished_at", "store_url", "strategy", "deep", "requests", "expected",
               "verified", "missing", "errored", "incomplete", "unexpected", "outcome", "error")
# How the ledger stores them: text, counts (INTEGER), and those it cannot do without (NOT NULL).
COUNT_COLUMNS = ("tasks_total", "expected_total")
TEXT_COLUMNS = tuple(c for c in MANIFEST_COLUMNS if c not in COUNT_COLUMNS)
REQUIRED_COLUMNS = ("job_type", "layout", "seed_policy", "created_at", *COUNT_COLUMNS)
KINDS = {"s": "simulation", "a": "aggregation"}
# A blob decompresses to at most this many times its own size (JSON lines compress ~10x; a gzip bomb
# 1000x), never less than 64 MiB nor more than JOBLEDGER_MAX_BLOB_BYTES (default 8 GiB).
MAX_RATIO = 50
MIN_LIMIT = 64 << 20
MAX_BLOB_BYTES = env_int("JOBLEDGER_MAX_BLOB_BYTES", 8 << 30, minimum=1)
STATES = set(OUTPUT_STATES) | {"unchecked"}


def gunzip(data: bytes, key: str) -> bytes:
    """``gzip.decompress`` with an output limit: a gzip bomb is a one-line error, not a MemoryError."""
    limit = min(MAX_BLOB_BYTES, max(MIN_LIMIT, MAX_RATIO * len(data)))
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RegistryError(f"{key}: not gzip data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise RegistryError(f"{key}: decompresses to more than {limit:,} bytes; refused")
    if not inflater.eof:
        raise RegistryError(f"{key}: truncated gzip data")
    return out


def _shape(ok: bool, key: str, where: str, what: str) -> None:
    if not ok:
        raise RegistryError(f"{key}: {where}: {what}")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _is_seed(value: object) -> bool:
    """None, or a seed the contracts allow (0..2**64-1), as a number or as its decimal digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    return value is None or type(value) is int and 0 <= value <= SEED_MAX


def check_manifest(header: dict, rows: list, key: str) -> None:
    """Every field of a pulled manifest has the type the ledger needs, every index points at an entry,
    every output path stays inside the store: a hand-made manifest is refused in one line."""
    # Any: a pulled header is untyped JSON; _shape checks each field before it is used.
    job: Any = header.get("job")
    _shape(isinstance(job, dict), key, "header", "'job' is not an object")
    _shape("spec" in header, key, "header", "'spec' is missing")
    _shape(all(k in job for k in MANIFEST_COLUMNS), key, "header",
           f"'job' must hold {', '.join(MANIFEST_COLUMNS)}")
    check_fields(job, key, text=TEXT_COLUMNS, counts=COUNT_COLUMNS, where="header: job: ")
    _shape(all(job[k] is not None for k in REQUIRED_COLUMNS), key, "header",
           f"'job' has no {' or '.join(k for k in REQUIRED_COLUMNS if job[k] is None)}")
    _shape(job["metadata"] is None or _is_json_object(job["metadata"]), key, "header",
           "'job' metadata is not a JSON object")
    _shape(job["seed_policy"] in SEED_POLICIES, key, "header", "unknown seed_policy")
    _shape(isinstance(job["layout"], str), key, "header", "layout is not text")
    try:
        Layout.parse(job["layout"])
        if isinstance(job["store_url"], str):
            refuse_sas(job["store_url"], "store", RegistryError)
    except JobledgerError as exc:
        raise RegistryError(f"{key}: header: {exc}") from None
    parent = job.get("parent_job_id")
    _shape(parent is None or isinstance(parent, str) and unsafe_reason(parent) is None and "/" not in parent,
           key, "header", f"parent_job_id {str(parent)[:40]!r} is not a job id")
    params: Any = header.get("params")
    templates: Any = header.get("templates")
    _shape(isinstance(params, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in params),
        key, "header", "'params' is not a list of [id, json]")
    _shape(isinstance(templates, list) and all(
        isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in templates),
        key, "header", "'templates' is not a list of [bundle, entrypoint, outputs]")
    for i, template in enumerate(templates):
        try:
            names = json.loads(template[2])
        except ValueError:
            names = False
        _shape(names is None or isinstance(names, list) and all(isinstance(n, str) for n in names), key,
               f"templates[{i}]", "outputs is not a JSON list of names or null")
    n_params, n_templates = len(params), len(templates)
    for i, row in enumerate(rows):
        where = f"output {i}"
        _shape(isinstance(row, list) and len(row) == 7, key, where, "not a list of 7 fields")
        kind, task_id, p, t, task_seed, run_seed, path = row
        _shape(isinstance(kind, str) and kind in KINDS and isinstance(task_id, str), key, where,
               "bad kind or task id")
        _shape(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < n_params, key, where,
               "bad param index")
        _shape(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n_templates, key, where,
               "bad template index")
        _shape(_is_seed(task_seed) and _is_seed(run_seed), key, where, "a seed is not an integer")
        reason = unsafe_reason(path)
        _shape(reason is None, key, where, f"path {str(path)[:60]!r} {reason}: it must stay inside the store")


def check_observed(doc: dict, rows: int, key: str) -> None:
    """The observations of a job of ``rows`` outputs are well formed (indexes, states, run references)."""
    runs = doc["runs"]
    _shape(all(isinstance(r, list) and len(r) == len(RUN_COLUMNS) and
               all(v is None or isinstance(v, (str, int, float)) for v in r) for r in runs),
           key, "runs", f"each run must be a list of {len(RUN_COLUMNS)} plain values")
    _shape(all(isinstance(r[0], str) for r in runs), key, "runs", "started_at is not text")

    def ref(value: object) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool)
                                 and 0 <= value < len(runs))

    def idx(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < rows

    for i, o in enumerate(doc["outputs"]):
        _shape(isinstance(o, list) and len(o) == 6 and idx(o[0]) and o[1] in STATES and
               (o[2] is None or isinstance(o[2], str)) and all(ref(v) for v in o[3:]),
               key, f"outputs[{i}]", "not [index, state, detail, run, run, run]")
    for i, e in enumerate(doc["events"]):
        _shape(isinstance(e, list) and len(e) == 5 and idx(e[0]) and ref(e[1]) and e[2] in STATES and
               e[3] in STATES and (e[4] is None or isinstance(e[4], str)),
               key, f"events[{i}]", "not [index, run, from state, to state, detail]")
    for i, u in enumerate(doc["unexpected"]):
        _shape(isinstance(u, list) and len(u) == 2 and unsafe_reason(u[0]) is None and ref(u[1]),
               key, f"unexpected[{i}]", "not [safe relative path, run]")


# ------------------------------------------------------------------ manifest

def build_manifest(job: dict, spec, rows: Iterable[tuple]) -> bytes:
    """The manifest of a job: its constants (``job``: its row), spec and every expected output in ledger
    order, from ``rows`` of (kind, task_id, param_id, params_json, bundle_ref, entrypoint, outputs,
    task_seed, run_seed, path): see manifest_rows (a job in the ledger) and staging.manifest_rows (a job
    being registered)."""
    params: dict[str, int] = {}
    param_json: dict[str, str] = {}
    templates: dict[tuple, int] = {}
    lines = []
    for kind, task_id, param_id, params_json, bundle_ref, entrypoint, outputs, task_seed, run_seed, path \
            in rows:
        p = params.setdefault(param_id, len(params))
        param_json.setdefault(param_id, params_json)
        t = templates.setdefault((bundle_ref, entrypoint, outputs), len(templates))
        lines.append(json.dumps([kind[0], task_id, p, t, _int(task_seed), _int(run_seed), path],
                                separators=(",", ":")))
    header = {"format": MANIFEST_FORMAT, "job_id": job["job_id"],
              "job": {c: job[c] for c in MANIFEST_COLUMNS},
              "spec": spec, "params": [[pid, param_json[pid]] for pid in params],
              "templates": [list(t) for t in templates], "outputs": len(lines)}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False) + "\n" + "\n".join(lines)
    return gzip.compress(text.encode(), 6)


def manifest_rows(ledger: Ledger, job_id: str) -> Iterable[tuple]:
    """The rows build_manifest takes, for a job in the ledger."""
    return ledger.conn.execute(
        "SELECT o.kind, o.task_id, p.param_id, p.params_json, t.bundle_ref, t.entrypoint, t.outputs, "
        "o.task_seed, o.run_seed, o.path FROM outputs o JOIN params p ON p.param_key = o.param_key "
        "JOIN task_templates t ON t.template_id = o.template_id WHERE o.job_id = ? ORDER BY o.output_id",
        (job_id,))


def parse_manifest(data: bytes, key: str) -> tuple[dict, list[list]]:
    try:
        text = gunzip(data, key).decode()
        first, _, rest = text.partition("\n")
        header = json.loads(first)
        rows = [json.loads(line) for line in rest.splitlines() if line]
    except (OSError, EOFError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RegistryError(f"{key}: not a gzip JSON-lines manifest ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != MANIFEST_FORMAT:
        raise RegistryError(f"{key}: key 'format' is not {MANIFEST_FORMAT}")
    if header.get("outputs") != len(rows):
        raise RegistryError(f"{key}: truncated ({len(rows)} of {header.get('outputs')} outputs)")
    check_text([header, rows], text, key)
    check_manifest(header, rows, key)
    return header, rows


def manifest_outputs(header: dict, rows: Iterable[list]) -> tuple[dict[str, str], Iterator[ExpectedOutput]]:
    """A parsed manifest as the ledger inserts it: param_id → params JSON, and the expected outputs."""
    params = {pid: text for pid, text in header["params"]}
    pids = [pid for pid, _ in header["params"]]
    templates = [(bundle_ref, entrypoint, _outputs(text))
                 for bundle_ref, entrypoint, text in header["templates"]]

    def outputs() -> Iterator[ExpectedOutput]:
        for kind, task_id, p, t, task_seed, run_seed, path in rows:
            bundle_ref, entrypoint, names = templates[t]
            yield ExpectedOutput(KINDS[kind], task_id, pids[p], bundle_ref, entrypoint, names,
                                 _int(task_seed), _int(run_seed), path)
    return params, outputs()


def _outputs(text: str) -> tuple[str, ...] | None:
    names = json.loads(text)
    return tuple(names) if names is not None else None


# ------------------------------------------------------------------ observations

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
                   " SELECT row_number() OVER (ORDER BY output_id) - 1 AS idx, *"
                   " FROM outputs WHERE job_id = ?)"
                   " WHERE state <> 'unchecked' OR detail IS NOT NULL OR first_verified_run IS NOT NULL"
                   " OR last_seen_run IS NOT NULL OR state_run IS NOT NULL ORDER BY idx", (job_id,))]
    events = [[r["idx"], ref(r["run_id"]), r["from_state"], r["to_state"], r["detail"]]
              for r in ledger.query(
                  "SELECT i.idx, e.run_id, e.from_state, e.to_state, e.detail FROM output_events e JOIN ("
                  " SELECT output_id, row_number() OVER (ORDER BY output_id) - 1 AS idx"
                  " FROM outputs WHERE job_id = ?)"
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
        raw = gunzip(data, key)
        doc = json.loads(raw)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RegistryError(f"{key}: not gzip JSON ({exc})") from None
    check_text(doc, raw, key)
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
    rows = conn.execute("SELECT count(*) FROM outputs WHERE job_id = ?", (job_id,)).fetchone()[0]
    check_observed(remote, rows, f"jobs/{job_id}/observed.json.gz")
    # A run has no id shared between ledgers: it is known by all its columns. Validation writes a run
    # in one transaction, so a published run never changes afterwards; two runs equal in every column
    # (same start and end to the millisecond, same counts) say the same thing and are kept once.
    local_runs = {tuple(r[c] for c in RUN_COLUMNS): r["run_id"] for r in ledger.query(
        f"SELECT run_id, {', '.join(RUN_COLUMNS)} FROM validation_runs WHERE job_id = ?", (job_id,))}
    run_ids: list[int | None] = []
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
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_staged (idx INTEGER PRIMARY KEY, state TEXT,"
                 " detail TEXT, fv INTEGER, ls INTEGER, sr INTEGER)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_observed (output_id INTEGER PRIMARY KEY, state TEXT,"
                 " detail TEXT, fv INTEGER, ls INTEGER, sr INTEGER, sr_at TEXT, fv_at TEXT, ls_at TEXT)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS mirror_events (idx INTEGER, run_id INTEGER,"
                 " from_state TEXT, to_state TEXT, detail TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.mirror_events_idx ON mirror_events (idx)")
    for table in ("mirror_index", "mirror_staged", "mirror_observed", "mirror_events"):
        conn.execute(f"DELETE FROM temp.{table}")
    conn.execute("INSERT INTO temp.mirror_index SELECT row_number() OVER (ORDER BY output_id) - 1, output_id "
                 "FROM manifest WHERE job_id = ?", (job_id,))
    conn.executemany("INSERT INTO temp.mirror_staged VALUES (?,?,?,?,?,?)",
                     ((i, state, detail, run(fv), run(ls), run(sr))
                      for i, state, detail, fv, ls, sr in remote["outputs"]))
    conn.execute("INSERT INTO temp.mirror_observed SELECT x.output_id, r.state, r.detail, r.fv, r.ls, r.sr, "
                 "coalesce(rs.started_at, ''), fv.started_at, ls.started_at FROM temp.mirror_staged r "
                 "JOIN temp.mirror_index x USING (idx) LEFT JOIN validation_runs rs ON rs.run_id = r.sr "
                 "LEFT JOIN validation_runs fv ON fv.run_id = r.fv "
                 "LEFT JOIN validation_runs ls ON ls.run_id = r.ls")
    # An output this ledger never observed has no output_states row: the remote observation is inserted.
    conn.execute("""
        INSERT INTO output_states (output_id, state, detail, state_run)
        SELECT m.output_id, m.state, m.detail, m.sr
        FROM temp.mirror_observed m LEFT JOIN output_states s ON s.output_id = m.output_id
        WHERE (s.output_id IS NULL OR s.state IS NOT m.state OR s.detail IS NOT m.detail
               OR s.state_run IS NOT m.sr)
          AND (m.sr_at > coalesce((SELECT started_at FROM validation_runs WHERE run_id = s.state_run), '')
               OR (m.sr_at = coalesce((SELECT started_at FROM validation_runs WHERE run_id = s.state_run), '')
                   AND m.state = 'verified' AND coalesce(s.state, 'unchecked') <> 'verified'))
        ORDER BY m.output_id
        ON CONFLICT (output_id) DO UPDATE SET state = excluded.state, detail = excluded.detail,
                                              state_run = excluded.state_run""")
    # A validation observes every output of its job: once the job has a run, none is unchecked (writers
    # before 'unchecked' existed published only the outputs they did not see missing).
    conn.execute("INSERT INTO output_states (output_id, state) SELECT m.output_id, 'missing' FROM manifest m "
                 "LEFT JOIN output_states s ON s.output_id = m.output_id "
                 "WHERE m.job_id = ? AND coalesce(s.state, 'unchecked') = 'unchecked' "
                 "AND EXISTS (SELECT 1 FROM validation_runs WHERE job_id = ?) ORDER BY m.output_id "
                 "ON CONFLICT (output_id) DO UPDATE SET state = 'missing'", (job_id, job_id))
    conn.execute("""
        UPDATE output_states SET
          first_verified_run = CASE WHEN output_states.first_verified_run IS NULL
              OR m.fv_at < (SELECT started_at FROM validation_runs
                            WHERE run_id = output_states.first_verified_run)
              THEN coalesce(m.fv, output_states.first_verified_run) ELSE output_states.first_verified_run END,
          last_seen_run = CASE WHEN output_states.last_seen_run IS NULL
              OR m.ls_at > (SELECT started_at FROM validation_runs WHERE run_id = output_states.last_seen_run)
              THEN coalesce(m.ls, output_states.last_seen_run) ELSE output_states.last_seen_run END
        FROM temp.mirror_observed m
        WHERE output_states.output_id = m.output_id AND (m.fv IS NOT NULL OR m.ls IS NOT NULL)""")
    conn.executemany("INSERT INTO temp.mirror_events VALUES (?,?,?,?,?)",
                     ((i, run(r), a, b, d) for i, r, a, b, d in remote["events"]))
    conn.execute("INSERT INTO output_events (output_id, run_id, from_state, to_state, detail) "
                 "SELECT x.output_id, e.run_id, e.from_state, e.to_state, e.detail "
                 "FROM temp.mirror_events e JOIN temp.mirror_index x USING (idx) "
                 "WHERE NOT EXISTS (SELECT 1 FROM output_events o WHERE o.output_id = x.output_id "
                 # '+' keeps SQLite on the per-output index: one run has an event for every output
                 "AND +o.run_id = e.run_id AND o.to_state = e.to_state)")
    if remote["unexpected"]:
        newest_remote = max((remote["runs"][r][0] for _, r in remote["unexpected"] if r is not None),
                            default="")
        newest_local = conn.execute("SELECT max(v.started_at) FROM unexpected_paths u JOIN validation_runs v "
                                    "USING (run_id) WHERE u.job_id = ?", (job_id,)).fetchone()[0] or ""
        if newest_remote >= newest_local:
            conn.execute("DELETE FROM unexpected_paths WHERE job_id = ?", (job_id,))
            conn.executemany("INSERT OR IGNORE INTO unexpected_paths (job_id, path, run_id) VALUES (?,?,?)",
                             ((job_id, path, run(r)) for path, r in remote["unexpected"] if r is not None))


def _int(seed):
    return int(seed) if seed is not None else None


def same_observations(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("runs", "outputs", "events", "unexpected"))
