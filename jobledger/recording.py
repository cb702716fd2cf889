"""Recording a validation: the run row, the output states that changed (an event for each change of
an output observed before), and the unexpected directories, inside the caller's transaction.

A strategy hands over its observation in TEMP tables: ``observed`` (output_id, state, detail) holds
at least every output whose state or detail differs from what the ledger holds (the listing
strategies put every output there, the scan strategy only those that changed) and ``unexpected``
(path) the result directories no expected output names, when they were looked for; the counts of
every state come with it. Only outputs whose state or detail changed are written, in output_id
order, into the narrow ``output_states`` table: a repeat over an unchanged store writes the run row
and nothing per output. An output's first observation inserts its state row and is no event: the
job's first run row records that observation.
"""

from __future__ import annotations

from . import states
from .ledger import Ledger
from .registry.state import Progress, make_progress
from .timeutil import utcnow

NOT_OBSERVED = states.UNCHECKED  # an output no validation has looked at: no output_states row (schema.sql)


def new_observation(ledger: Ledger) -> None:
    """Fresh, empty ``temp.observed`` and ``temp.unexpected``."""
    conn = ledger.conn
    conn.execute("DROP TABLE IF EXISTS temp.observed")
    conn.execute("DROP TABLE IF EXISTS temp.unexpected")
    conn.execute(
        "CREATE TEMP TABLE observed (output_id INTEGER PRIMARY KEY, state TEXT NOT NULL, detail TEXT, "
        "listing_row INTEGER)"
    )
    conn.execute("CREATE TEMP TABLE unexpected (path TEXT PRIMARY KEY)")


def drop_observation(ledger: Ledger) -> None:
    """The temp tables of an observation, once its run is recorded (not inside a transaction)."""
    if not ledger.conn.in_transaction:
        for table in ("listing", "observed", "unexpected", "claimed"):
            ledger.conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def observed_counts(ledger: Ledger) -> dict:
    """Outputs per state in ``temp.observed`` when it holds every output (the listing strategies)."""
    counts = dict.fromkeys(states.OUTPUT_STATES, 0)
    for state, n in ledger.conn.execute("SELECT state, count(*) FROM observed GROUP BY state"):
        counts[state] = n
    counts["expected"] = sum(counts[s] for s in states.OUTPUT_STATES)
    return counts


# The state of each output that changed (or was observed for the first time), with the runs that first
# verified it, last saw it (an output present now was seen by this run; one that just went missing was
# last seen by the job's previous run) and changed it.
UPSERT_STATES_SQL = """
INSERT INTO output_states (output_id, state, detail, first_verified_run, last_seen_run, state_run)
SELECT o.output_id, o.state, o.detail,
       CASE WHEN o.state = 'verified' THEN coalesce(s.first_verified_run, :run) ELSE s.first_verified_run END,
       CASE WHEN o.state <> 'missing' THEN :run
            WHEN coalesce(s.state, 'unchecked') NOT IN ('missing', 'unchecked') THEN :previous
            ELSE s.last_seen_run END,
       CASE WHEN o.state IS NOT s.state THEN :run ELSE s.state_run END
FROM observed o LEFT JOIN output_states s ON s.output_id = o.output_id
WHERE o.state IS NOT s.state OR o.detail IS NOT s.detail
ORDER BY o.output_id
ON CONFLICT (output_id) DO UPDATE SET state = excluded.state, detail = excluded.detail,
    first_verified_run = excluded.first_verified_run, last_seen_run = excluded.last_seen_run,
    state_run = excluded.state_run
"""


def insert_run(ledger: Ledger, job_id: str, run: dict, counts: dict, *, unexpected_known: bool,
               outcome: str) -> int:
    """Insert the run row, complete and final (a published run never changes), and return its id.
    Call inside transaction()."""
    unexpected = ledger.conn.execute("SELECT count(*) FROM temp.unexpected").fetchone()[0] \
        if unexpected_known else 0
    cursor = ledger.conn.execute(
        "INSERT INTO validation_runs (job_id, started_at, finished_at, store_url, strategy, deep, requests, "
        "expected, verified, missing, errored, incomplete, stale, unexpected, outcome) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (job_id, run["started_at"], utcnow(), run["store"], run["strategy"], int(run["deep"]),
         run["requests"], counts["expected"], counts["verified"], counts["missing"], counts["errored"],
         counts["incomplete"], counts["stale"], unexpected, outcome))
    return int(cursor.lastrowid or 0)


def record_run(ledger: Ledger, job_id: str, run_id: int, counts: dict, *, unexpected_known: bool) -> dict:
    """Write what run ``run_id`` observed: the output states that changed, their events, the unexpected
    paths. Call inside transaction()."""
    conn = ledger.conn
    changed = conn.execute(
        "SELECT count(*) FROM observed o LEFT JOIN output_states s ON s.output_id = o.output_id "
        "WHERE o.state <> coalesce(s.state, ?)", (NOT_OBSERVED,)).fetchone()[0]
    conn.execute("INSERT INTO output_events (output_id, run_id, from_state, to_state, detail) "
                 "SELECT o.output_id, ?, s.state, o.state, o.detail FROM observed o "
                 "JOIN output_states s ON s.output_id = o.output_id WHERE o.state <> s.state", (run_id,))
    previous = conn.execute("SELECT max(run_id) FROM validation_runs WHERE job_id = ? AND run_id < ?",
                            (job_id, run_id)).fetchone()[0]
    conn.execute(UPSERT_STATES_SQL, {"run": run_id, "previous": previous})
    unexpected = None
    if unexpected_known:
        conn.execute("DELETE FROM unexpected_paths WHERE job_id = ?", (job_id,))
        unexpected = conn.execute("INSERT INTO unexpected_paths (job_id, path, run_id) "
                                  "SELECT ?, path, ? FROM temp.unexpected ORDER BY path",
                                  (job_id, run_id)).rowcount
    return {**counts, "unexpected": unexpected, "run_id": run_id, "changed": changed}


def progress(ledger: Ledger, job_id: str, counts: dict) -> Progress:
    """What this run is about to record, in ModelOps's terms (told to the registry with the verdict):
    each output's observed state, or the ledger's where ``observed`` holds only the changes."""

    def paths(condition: str):
        return (
            r[0]
            for r in ledger.conn.execute(
                f"SELECT m.path FROM manifest m LEFT JOIN temp.observed o ON o.output_id = m.output_id "
                f"LEFT JOIN output_states s ON s.output_id = m.output_id "
                f"WHERE m.job_id = ? AND coalesce(o.state, s.state, '{NOT_OBSERVED}') {condition} "
                f"ORDER BY m.output_id",
                (job_id,),
            )
        )

    return make_progress(counts, paths("<> 'verified'"), paths("= 'verified'"))


def others_wrote(ledger: Ledger, since: int) -> bool:
    """Whether another connection committed to the ledger since ``PRAGMA data_version`` read ``since``
    (this connection's own commits do not count)."""
    return ledger.conn.execute("PRAGMA data_version").fetchone()[0] != since


def data_version(ledger: Ledger) -> int:
    return ledger.conn.execute("PRAGMA data_version").fetchone()[0]
