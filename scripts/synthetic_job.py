"""A big synthetic job for report tests and benchmarks: registered for real, observed by SQL.

The job is a SimulationStudy of N parameter sets × R replicates (``beta`` spread over [0, 1),
``gamma`` over five values) with one target, so each parameter set also has one aggregation;
registered through jobledger. Its observed states are then written straight into the ledger as
three validation runs would have left them (creating a million result directories would only slow
the set-up): about 95 % verified, failures clustered at ``beta`` ≥ 0.96, a sprinkling of missing,
incomplete and unchecked outputs elsewhere, the aggregation of every parameter set with a failed
replicate stale, and some outputs that were verified in the second run and vanished in the third.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

BUNDLE = "registry.example/model@sha256:" + "ab" * 32
RUN_TIMES = ("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z", "2026-03-01T12:00:00.000Z")


def study_spec(n_sets: int, replicates: int) -> dict:
    return {"model": "models.sir", "scenario": "baseline", "sampling_method": "grid",
            "n_replicates": replicates, "outputs": ["incidence", "prevalence"],
            "targets": ["targets.prev/loss"],
            "parameter_sets": [{"beta": i / n_sets, "gamma": 0.05 * (1 + i % 5)} for i in range(n_sets)]}


_BETA = "(SELECT json_extract(p.params_json, '$.beta') FROM params p WHERE p.param_key = m.param_key)"
_FINAL_STATES = f"""
INSERT INTO output_states (output_id, state, detail)
SELECT output_id, state, detail FROM (SELECT output_id,
  CASE
    WHEN {_BETA} >= 0.96
      THEN CASE output_id % 3 WHEN 0 THEN 'errored' WHEN 1 THEN 'missing' ELSE 'verified' END
    WHEN output_id % 997 = 5 THEN 'missing'
    WHEN output_id % 97 = 0 THEN 'missing'
    WHEN output_id % 211 = 0 THEN 'incomplete'
    WHEN output_id % 499 = 3 THEN 'unchecked'
    ELSE 'verified' END AS state,
  CASE
    WHEN {_BETA} >= 0.96 AND output_id % 3 = 0 THEN 'R0 diverged: beta/gamma > 20'
    WHEN output_id % 997 <> 5 AND output_id % 97 <> 0 AND output_id % 211 = 0
      THEN 'no result.json (2 files written)'
    END AS detail
FROM manifest m WHERE job_id = :job AND kind = 'simulation')
WHERE state <> 'unchecked'  -- no row: not checked yet
"""
# An aggregation over a parameter set with a replicate that is not verified is stale.
_AGGREGATION_STATES = """
INSERT INTO output_states (output_id, state, detail)
SELECT a.output_id, CASE WHEN bad.n > 0 THEN 'stale' ELSE 'verified' END,
       CASE WHEN bad.n > 0 THEN 'aggregates ' || (bad.total - bad.n) || ' of ' || bad.total
                                || ' ok replicates' END
FROM manifest a
JOIN (SELECT param_key, sum(state <> 'verified') AS n, count(*) AS total FROM outputs
      WHERE job_id = :job AND kind = 'simulation' GROUP BY param_key) AS bad ON bad.param_key = a.param_key
WHERE a.job_id = :job AND a.kind = 'aggregation'
"""


def make_job(db: str | Path, n_sets: int, replicates: int = 5, *, store: str = "/tmp/synthetic-store",
             job_id: str = "job-5e5e5e5e") -> str:
    """Register the synthetic job in the ledger at ``db`` and give it its observed history; returns its id."""
    from jobledger import api
    from jobledger.ledger import Ledger
    with Ledger(db) as ledger:
        api.register(ledger, study_spec(n_sets, replicates), bundle=BUNDLE, store=store, job_id=job_id)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        expected = conn.execute("SELECT count(*) FROM outputs WHERE job_id = ?", (job_id,)).fetchone()[0]
        conn.execute(_FINAL_STATES, {"job": job_id})
        conn.execute(_AGGREGATION_STATES, {"job": job_id})
        final = dict(conn.execute("SELECT state, count(*) FROM outputs WHERE job_id = ? GROUP BY state",
                                  (job_id,)).fetchall())
        vanished = conn.execute("SELECT count(*) FROM outputs WHERE job_id = ? AND output_id % 997 = 5 "
                                "AND kind = 'simulation' AND state = 'missing'",
                                (job_id,)).fetchone()[0]
        runs = []
        for i, started in enumerate(RUN_TIMES):
            verified = (expected // 2, final.get("verified", 0) + vanished, final.get("verified", 0))[i]
            counts = (verified, expected - verified, 0, 0) if i < 2 else \
                (verified, final.get("missing", 0), final.get("errored", 0), final.get("incomplete", 0))
            cursor = conn.execute(
                "INSERT INTO validation_runs (job_id, started_at, finished_at, store_url, strategy, "
                "requests, expected, verified, missing, errored, incomplete, unexpected, outcome) "
                "VALUES (?, ?, ?, ?, 'list', ?, ?, ?, ?, ?, ?, 0, ?)",
                (job_id, started, started.replace(":00.000Z", ":42.000Z"), store, 16 + expected // 5000,
                 expected, *counts, "partial"))
            runs.append(cursor.lastrowid)
        of_job = "output_id IN (SELECT output_id FROM manifest WHERE job_id = ?)"
        conn.execute("UPDATE output_states SET first_verified_run = CASE WHEN state = 'verified' THEN ? END, "
                     f"last_seen_run = ?, state_run = ? WHERE {of_job}", (runs[0], runs[2], runs[2], job_id))
        conn.execute(f"UPDATE output_states SET first_verified_run = ? WHERE {of_job} "
                     "AND output_id % 997 = 5 "
                     "AND state = 'missing' AND output_id IN (SELECT output_id FROM manifest "
                     "WHERE kind = 'simulation')", (runs[1], job_id))
        conn.execute("INSERT INTO output_events (output_id, run_id, from_state, to_state, detail) "
                     "SELECT output_id, ?, 'verified', 'missing', NULL FROM outputs "
                     "WHERE job_id = ? AND output_id % 997 = 5 AND kind = 'simulation' AND state = 'missing'",
                     (runs[2], job_id))
        conn.execute("UPDATE jobs SET status = 'partial', validation_attempts = 3, "
                     "validation_completed_at = ? WHERE job_id = ?", (RUN_TIMES[-1], job_id))
        for from_status, to_status, at in (("scheduled", "validating", RUN_TIMES[-1]),
                                           ("validating", "partial", RUN_TIMES[-1])):
            conn.execute("INSERT INTO transitions (job_id, from_status, to_status, at, reason) "
                         "VALUES (?,?,?,?,?)", (job_id, from_status, to_status, at, "synthetic history"))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return job_id
