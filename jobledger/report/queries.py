"""The SQL the report and Datasette's canned queries share: one text per question, over the ledger's views.

Each query takes ``:job_id``; Datasette shows them as forms, the report binds them.
"""
from __future__ import annotations

# Expected outputs that are not verified, with why (the full list the report embeds as CSV). By path:
# a parameter set's rows are then adjacent, and the gzipped CSV in the report is 13 % smaller.
MISSING_OUTPUTS = """
SELECT path, reason, param_id, seed, task_id, detail
FROM unverified_outputs WHERE job_id = :job_id
ORDER BY path
""".strip()

# Outputs a validation once saw verified and a later one did not find (or found broken).
VANISHED_OUTPUTS = """
SELECT o.path, e.to_state AS became, o.state AS state_now, r.started_at AS gone_at, r.run_id, e.detail
FROM output_events e
JOIN outputs o ON o.output_id = e.output_id
JOIN validation_runs r ON r.run_id = e.run_id
WHERE o.job_id = :job_id AND e.from_state = 'verified'
ORDER BY r.run_id, o.path
""".strip()

# Per-param-set completion: expected and verified outputs (simulations and aggregations).
PARAM_SET_COMPLETION = """
SELECT param_id, count(*) AS expected, sum(state = 'verified') AS verified,
       round(100.0 * sum(state = 'verified') / count(*), 1) AS pct_verified
FROM expected_outputs WHERE job_id = :job_id
GROUP BY param_id ORDER BY pct_verified, param_id
""".strip()

CANNED = {
    "missing_outputs": ("Not-verified outputs of a job", (
        "Every expected output of the job that is not verified, with the reason (missing, errored, "
        "incomplete, ...) and the detail when known."), MISSING_OUTPUTS),
    "vanished_outputs": ("Vanished outputs of a job", (
        "Outputs a validation saw verified and a later validation no longer found verified: when, and what "
        "they became."), VANISHED_OUTPUTS),
    "param_set_completion": ("Completion per parameter set", (
        "Expected and verified outputs of each parameter set of a job, least complete first."),
        PARAM_SET_COMPLETION),
}
