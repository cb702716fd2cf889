-- jobledger ledger schema: the current definition of every table, index and view.
-- A new ledger is created from this file. Every change to a table or index is ALSO a step in
-- jobledger/migrations.py (which upgrades existing ledgers); a test checks that a migrated
-- ledger and a new one have the same schema. Views are re-created from here on every upgrade.

CREATE TABLE IF NOT EXISTS jobs (
    job_id                  TEXT PRIMARY KEY,
    job_type                TEXT NOT NULL DEFAULT 'simulation',
    status                  TEXT NOT NULL CHECK (status IN ('pending','submitting','scheduled','running',
                                'validating','succeeded','partial','failed','cancelled')),
    bundle_ref              TEXT,
    runtime                 TEXT,            -- 'k8s', 'local', or NULL when submitted elsewhere
    k8s_name                TEXT,
    k8s_namespace           TEXT,
    k8s_uid                 TEXT,
    runtime_ref             TEXT,            -- runtime-specific handle (JSON), e.g. the local run directory
    parent_job_id           TEXT REFERENCES jobs(job_id),
    store_url               TEXT,
    layout                  TEXT NOT NULL DEFAULT 'token',
    seed_policy             TEXT NOT NULL DEFAULT 'runner' CHECK (seed_policy IN ('runner','task')),
    spec_format             TEXT,            -- 'simjob' | 'study' | NULL (imported without a manifest)
    spec_sha256             TEXT,            -- of its canonical JSON; the spec itself is in job_specs
    tasks_total             INTEGER NOT NULL DEFAULT 0,
    expected_total          INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    validation_attempts     INTEGER NOT NULL DEFAULT 0,
    validation_started_at   TEXT,
    validation_completed_at TEXT,
    last_validation_error   TEXT,
    error_message           TEXT,
    error_code              TEXT,
    metadata                TEXT             -- JSON object
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_job_id);

-- The submitted spec of each job, gzip-compressed canonical JSON (ledger.StoredSpec). Apart from the
-- jobs row, which every status change and validation rewrites whole: a big job's spec is megabytes.
CREATE TABLE IF NOT EXISTS job_specs (
    job_id  TEXT PRIMARY KEY REFERENCES jobs(job_id) ON DELETE CASCADE,
    spec_gz BLOB NOT NULL
);

-- One row per distinct parameter set, shared by its replicates and by every job using it.
CREATE TABLE IF NOT EXISTS params (
    param_key   INTEGER PRIMARY KEY,
    param_id    TEXT NOT NULL UNIQUE,
    params_json TEXT NOT NULL
);

-- What tasks of a job have in common: bundle, entrypoint (target entrypoint for aggregations), outputs.
CREATE TABLE IF NOT EXISTS task_templates (
    template_id INTEGER PRIMARY KEY,
    bundle_ref  TEXT NOT NULL,
    entrypoint  TEXT NOT NULL,
    outputs     TEXT NOT NULL,   -- JSON list of output names, or 'null' when not declared
    UNIQUE (bundle_ref, entrypoint, outputs)
);

-- One row per expected output, written at registration (resume marks the outputs it gave up on). Seeds have no declared
-- type: values >= 2**63 are kept as text. The view `outputs` adds each output's observed state.
CREATE TABLE IF NOT EXISTS manifest (
    output_id          INTEGER PRIMARY KEY,
    job_id             TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    kind               TEXT NOT NULL CHECK (kind IN ('simulation','aggregation')),
    task_id            TEXT NOT NULL,   -- canonical task id; the aggregation id for aggregations
    param_key          INTEGER NOT NULL REFERENCES params(param_key),
    template_id        INTEGER NOT NULL REFERENCES task_templates(template_id),
    task_seed,
    run_seed,
    path               TEXT NOT NULL,   -- relative to the job's store
    given_up_after     INTEGER          -- resume stopped retrying it after this many errored attempts
);
CREATE INDEX IF NOT EXISTS manifest_job ON manifest(job_id);  -- a job's outputs in output_id order
CREATE INDEX IF NOT EXISTS manifest_plan ON manifest(job_id, template_id, param_key);  -- all planning reads

-- What validation last observed of each output; no row until a validation has looked at it ('unchecked').
-- Kept apart from the wide manifest rows so that recording a validation writes ~30 bytes per output
-- whose state changed (and nothing for the others), instead of rewriting every manifest page.
CREATE TABLE IF NOT EXISTS output_states (
    output_id          INTEGER PRIMARY KEY REFERENCES manifest(output_id) ON DELETE CASCADE,
    state              TEXT NOT NULL
                           CHECK (state IN ('missing','verified','errored','incomplete','unchecked','stale')),
    detail             TEXT,            -- why an output is errored/incomplete, when known
    first_verified_run INTEGER REFERENCES validation_runs(run_id),
    last_seen_run      INTEGER REFERENCES validation_runs(run_id),
    state_run          INTEGER REFERENCES validation_runs(run_id)
);

-- Status history, written in the same transaction as the status change.
CREATE TABLE IF NOT EXISTS transitions (
    transition_id INTEGER PRIMARY KEY,
    job_id        TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    at            TEXT NOT NULL,
    reason        TEXT
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id, transition_id);

-- One row per validation of a job against its store.
CREATE TABLE IF NOT EXISTS validation_runs (
    run_id      INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    store_url   TEXT,
    strategy    TEXT,
    deep        INTEGER NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    expected    INTEGER NOT NULL DEFAULT 0,
    verified    INTEGER NOT NULL DEFAULT 0,
    missing     INTEGER NOT NULL DEFAULT 0,
    errored     INTEGER NOT NULL DEFAULT 0,
    incomplete  INTEGER NOT NULL DEFAULT 0,
    unexpected  INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,                    -- complete | partial | failed | in-progress | error
    error       TEXT,
    stale       INTEGER NOT NULL DEFAULT 0  -- aggregations over other inputs than their current replicates
);
CREATE INDEX IF NOT EXISTS validation_runs_job ON validation_runs(job_id, run_id);

-- Changes of an output's observed state only: the ledger grows with changes, not runs x outputs.
CREATE TABLE IF NOT EXISTS output_events (
    output_id  INTEGER NOT NULL REFERENCES manifest(output_id) ON DELETE CASCADE,
    run_id     INTEGER NOT NULL REFERENCES validation_runs(run_id) ON DELETE CASCADE,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX IF NOT EXISTS output_events_output ON output_events(output_id);
CREATE INDEX IF NOT EXISTS output_events_run ON output_events(run_id);

-- Result directories seen under a job's prefixes that no expected output names (latest run).
CREATE TABLE IF NOT EXISTS unexpected_paths (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES validation_runs(run_id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, path)
) WITHOUT ROWID;

-- ---------------------------------------------------------------- views for analysts
-- Views are dropped and re-created on every upgrade, so they always match this file.

-- Every expected output with its observed state (the columns of the table `outputs` once was): an
-- output no validation has looked at yet is 'unchecked'.
DROP VIEW IF EXISTS outputs;
CREATE VIEW outputs AS
SELECT m.output_id, m.job_id, m.kind, m.task_id, m.param_key, m.template_id, m.task_seed, m.run_seed, m.path,
       coalesce(s.state, 'unchecked') AS state, s.detail, s.first_verified_run, s.last_seen_run, s.state_run,
       m.given_up_after
FROM manifest m LEFT JOIN output_states s ON s.output_id = m.output_id;

DROP VIEW IF EXISTS expected_outputs;
CREATE VIEW expected_outputs AS
SELECT o.output_id, o.job_id, o.kind AS output_type, o.task_id, p.param_id, o.task_seed, o.run_seed,
       t.entrypoint, t.outputs, t.bundle_ref, o.path, o.state, o.detail,
       fv.started_at AS first_verified_at, ls.started_at AS last_seen_at, sc.started_at AS state_changed_at
FROM outputs o
JOIN params p ON p.param_key = o.param_key
JOIN task_templates t ON t.template_id = o.template_id
LEFT JOIN validation_runs fv ON fv.run_id = o.first_verified_run
LEFT JOIN validation_runs ls ON ls.run_id = o.last_seen_run
LEFT JOIN validation_runs sc ON sc.run_id = o.state_run;

DROP VIEW IF EXISTS job_summary;
CREATE VIEW job_summary AS
SELECT j.job_id, j.status, j.parent_job_id, j.created_at, j.updated_at,
       count(m.output_id) AS expected,
       coalesce(sum(s.state = 'verified'), 0) AS verified,
       coalesce(sum(s.state = 'missing'), 0) AS missing,
       coalesce(sum(s.state = 'errored'), 0) AS errored,
       coalesce(sum(s.state = 'incomplete'), 0) AS incomplete,
       coalesce(sum(s.state = 'stale'), 0) AS stale,
       -- (the outputs view's state, written out: a view inside this one would be materialized whole)
       coalesce(sum(m.output_id IS NOT NULL AND coalesce(s.state, 'unchecked') = 'unchecked'), 0) AS unchecked,
       coalesce(sum(m.given_up_after IS NOT NULL AND coalesce(s.state, '') <> 'verified'), 0) AS given_up,
       round(100.0 * coalesce(sum(s.state = 'verified'), 0) / nullif(count(m.output_id), 0), 1) AS pct_verified
FROM jobs j LEFT JOIN manifest m ON m.job_id = j.job_id LEFT JOIN output_states s ON s.output_id = m.output_id
GROUP BY j.job_id;

DROP VIEW IF EXISTS unverified_outputs;
CREATE VIEW unverified_outputs AS
SELECT o.output_id, o.job_id, o.path, o.state AS reason, o.detail, p.param_id, o.run_seed AS seed, o.task_seed,
       o.task_id, o.kind AS output_type
FROM outputs o JOIN params p ON p.param_key = o.param_key
WHERE o.state <> 'verified';

DROP VIEW IF EXISTS job_lineage;
CREATE VIEW job_lineage AS
WITH RECURSIVE tree(root_job_id, job_id, parent_job_id, depth) AS (
    SELECT job_id, job_id, parent_job_id, 0 FROM jobs WHERE parent_job_id IS NULL
    UNION ALL
    SELECT tree.root_job_id, j.job_id, j.parent_job_id, tree.depth + 1
    FROM jobs j JOIN tree ON j.parent_job_id = tree.job_id
)
SELECT tree.root_job_id, tree.job_id, tree.parent_job_id, tree.depth, j.status
FROM tree JOIN jobs j ON j.job_id = tree.job_id;
