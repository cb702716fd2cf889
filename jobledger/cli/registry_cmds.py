"""Registry commands: pull, push (the mirror itself runs inside every writing command)."""
from __future__ import annotations

import click

from .. import api, render
from .app import app_of, main


def _registry_ledger(ctx):
    app = app_of(ctx)
    if not app.registry:
        raise api.JobledgerError("no registry configured: pass --registry URL or set JOBLEDGER_REGISTRY")
    return app.ledger()


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--since", metavar="AGE",
              help="Only jobs updated in the registry within AGE (24h, 7d) or since an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="Print one result per job as JSON.")
@click.pass_context
def pull(ctx, job_ids, since, as_json):
    """Import or refresh jobs from the registry into the local ledger."""
    ledger = _registry_ledger(ctx)
    bar = render.Progress("pull")

    def on_total(n):
        bar.total = n

    try:
        results = api.pull_jobs(ledger, job_ids, since=since, progress=bar.advance, on_total=on_total)
    finally:
        bar.close()
    rows = [vars(r) for r in results]
    if as_json:
        click.echo(render.to_json(rows))
    elif rows:
        click.echo(render.table(rows, ["job_id", "action", "status", "expected", "note"]))
    else:
        click.echo("no jobs to pull")
    failed = [r for r in results if r.action == "failed"]
    if failed:
        raise api.JobledgerError(f"{len(failed)} of {len(results)} jobs could not be pulled "
                                 f"(first: {failed[0].note})")


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one result per job as JSON.")
@click.pass_context
def push(ctx, job_ids, as_json):
    """Publish local jobs to the registry (e.g. registered before a registry was configured)."""
    ledger = _registry_ledger(ctx)
    bar = render.Progress("push", len(job_ids) or None)
    try:
        results = api.push_jobs(ledger, job_ids, progress=bar.advance)
    finally:
        bar.close()
    rows = [vars(r) for r in results]
    if as_json:
        click.echo(render.to_json(rows))
    else:
        click.echo(render.table(rows, ["job_id", "status", "note"]) if rows else "no jobs to push")
