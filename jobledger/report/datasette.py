"""`jobledger serve`: the ledger, read-only, in Datasette, with a title and description for every
table and view and the report's questions as canned queries. Datasette is an optional extra
(``pip install jobledger[serve]``) and is imported only when serving."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .queries import CANNED

TITLE = "jobledger"
DESCRIPTION = ("Whether simulation jobs really finished, decided from their artifacts: one row per expected "
               "output, what each validation saw, and how jobs moved. Read-only.")

# Every table and view of schema.sql (a test checks none is left out).
TABLES = {
    "jobs": ("Jobs", (
        "One row per job: status, bundle, runtime coordinates, parent (resume), store, layout, seed policy, "
        "validation counters, last error.")),
    "job_specs": ("Submitted specs", "Each job's spec as submitted (gzip JSON) and its canonical sha256."),
    "params": ("Parameter sets", "Each distinct parameter set once: param_id and its canonical JSON."),
    "task_templates": ("Task templates", (
        "What the tasks of a job share: bundle, entrypoint (the target entrypoint for aggregations) "
        "and declared outputs.")),
    "manifest": ("Expected outputs", (
        "One row per output a job must write: kind, task id, seeds, parameter set, template and path in "
        "the store.")),
    "output_states": ("Observed output states", (
        "An output's observed state and detail, and the runs that first verified, last saw and last changed "
        "it; no row: not checked yet.")),
    "outputs": ("Expected outputs with their state", (
        "View: manifest rows with their observed state ('unchecked' before the first validation).")),
    "transitions": ("Status transitions", (
        "Every status change of a job, with time and reason, written in the same transaction as the "
        "change.")),
    "validation_runs": ("Validation runs", (
        "One row per validation of a job against its store: strategy, requests, counts per state, outcome, "
        "error.")),
    "output_events": ("Output state changes", (
        "Changes of an output's observed state only, per validation run.")),
    "unexpected_paths": ("Unexpected paths", (
        "Result directories under a job's prefixes that no expected output names (latest run).")),
    "expected_outputs": ("Expected outputs (joined)", (
        "View: outputs with param_id, entrypoint, declared outputs, bundle and the times they were first "
        "verified, last seen and last changed.")),
    "job_summary": ("Job summary", (
        "View: per job, expected outputs, counts per state and the share verified.")),
    "unverified_outputs": ("Not-verified outputs", (
        "View: every expected output that is not verified, with the reason, param_id, seed and task id.")),
    "job_lineage": ("Resume lineage", "View: every job in a resume tree with its root and depth."),
    "_migrations": ("Schema migrations", "The named schema steps applied to this ledger file, and when."),
}


def datasette_metadata(database: str) -> dict:
    """Datasette metadata for a ledger served under the name ``database``."""
    return {
        "title": TITLE,
        "description": DESCRIPTION,
        "databases": {database: {
            "tables": {name: {"title": title, "description": text} for name, (title, text) in TABLES.items()},
            "queries": {name: {"title": title, "description": text, "sql": sql}
                        for name, (title, text, sql) in CANNED.items()},
        }},
    }


def serve_ledger(path: str | Path, *, host: str = "127.0.0.1", port: int = 8001,
                 open_browser: bool = False) -> None:
    """Run Datasette on the ledger until interrupted. Datasette opens a file it may see change
    (not ``--immutable``) with a read-only connection, so the ledger cannot be written through it."""
    from datasette.cli import cli  # type: ignore[import-untyped]
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="jobledger-serve-") as tmp:
        metadata = Path(tmp) / "metadata.json"
        metadata.write_text(json.dumps(datasette_metadata(path.stem)), encoding="utf-8")
        args = ["serve", str(path), "--metadata", str(metadata), "--host", host, "--port", str(port),
                "--setting", "sql_time_limit_ms", "10000"]
        if open_browser:
            args.append("--open")
        cli.main(args=args, prog_name="datasette", standalone_mode=False)
