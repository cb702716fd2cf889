"""Registry commands: pull, push (the mirror itself runs inside every writing command)."""
from __future__ import annotations

from dataclasses import asdict

import click

from .. import api, render
from .app import app_of, complete_job_ids, main, option
from .ledger_cmds import example

PULL_COLUMNS = ["job_id", "action", "status", "expected", "note"]
PUSH_COLUMNS = ["job_id", "status", "note"]


def _registry_ledger(ctx):
    app = app_of(ctx)
    if not app.registry:
        raise api.JobledgerError("no registry configured: pass --registry URL or set JOBLEDGER_REGISTRY")
    return app.ledger()


def _print(results, columns: list[str], output: str | None, table_style: str | None, nothing: str) -> None:
    fmt = render.chosen(output, table_style)
    if not results and fmt == "table":
        click.echo(nothing)
        return
    render.output_rows((asdict(r) for r in results), columns, fmt, table_style=table_style,
                       colour=render.status_columns("status"))


@main.command(epilog=example("jobledger --registry az://job-registry pull",
                             "jobledger pull job-5a11e0c3 --since 7d --json"))
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...", shell_complete=complete_job_ids)
@option("--since", metavar="AGE",
        help="Only jobs updated in the registry within AGE (24h, 7d) or since an ISO date.")
@render.output_options
@click.pass_context
def pull(ctx, job_ids, since, output, table_style):
    """Import or refresh jobs from the registry into the local ledger."""
    ledger = _registry_ledger(ctx)
    with render.Progress("pull", len(job_ids) or None) as bar:
        results = api.pull_jobs(ledger, job_ids, since=since, progress=bar.update, on_total=bar.start)
    _print(results, PULL_COLUMNS, output, table_style, "no jobs to pull")
    failed = [r for r in results if r.action == "failed"]
    if failed:
        raise api.JobledgerError(f"{len(failed)} of {len(results)} jobs could not be pulled "
                                 f"(first: {failed[0].note})")


@main.command(epilog=example("jobledger --registry file:///shared/jobledger push",
                             "jobledger push job-5a11e0c3"))
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...", shell_complete=complete_job_ids)
@render.output_options
@click.pass_context
def push(ctx, job_ids, output, table_style):
    """Publish local jobs to the registry (made before it was set)."""
    ledger = _registry_ledger(ctx)
    with render.Progress("push", len(job_ids) or None) as bar:
        results = api.push_jobs(ledger, job_ids, progress=bar.update)
    _print(results, PUSH_COLUMNS, output, table_style, "no jobs to push")
