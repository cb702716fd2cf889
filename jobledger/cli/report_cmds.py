"""Report commands: report (a self-contained HTML page) and serve (Datasette over the ledger)."""
from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from .. import api, render
from .app import app_of, complete_job_ids, main, option
from .ledger_cmds import example


@main.command(epilog=example("jobledger report job-5a11e0c3                  # writes job-5a11e0c3.html",
                             "jobledger report job-5a11e0c3 -o audit.html --open",
                             "jobledger report --ledger -o site/index.html   # one page per job beside it"))
@click.argument("job_id", required=False, shell_complete=complete_job_ids)
@option("--ledger", "whole_ledger", is_flag=True,
        help="One page over every job, with each job's report written beside it.")
@option("-o", "--output", metavar="FILE|DIR/", type=click.Path(),
        help="Where to write (default <job_id>.html, or jobledger-report/index.html with --ledger); "
             "in a directory (one that exists, or a path ending in /), that file name inside it.")
@option("--open", "open_it", is_flag=True, help="Open the written page in a browser.")
@option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
def report(ctx, job_id, whole_ledger, output, open_it, as_json):
    """Write a self-contained HTML report of a job or the ledger.

    The page reads the ledger alone (it works after `pull`), needs no network, and shows the
    completion map, the parameter view, the resume tree, the validation timeline and the lists of
    vanished, unexpected and not-verified outputs (all of them as CSV inside the file).
    """
    if bool(job_id) == whole_ledger:
        raise click.UsageError("give a JOB_ID or --ledger (not both)")
    ledger = app_of(ctx).ledger(readonly=True)
    if whole_ledger:
        written = api.write_ledger_report(ledger, output)
    else:
        written = api.write_job_report(ledger, job_id, output)
    if as_json:
        click.echo(render.to_json(written.as_dict()))
    else:
        what = f"{written.jobs} job report(s) beside it" if whole_ledger else \
            f"{written.cells:,} map cells{' (binned)' if written.binned else ''}"
        click.echo(f"wrote {written.path} ({written.bytes / 1e6:.2f} MB, {what}, {written.seconds:.2f} s)")
    if open_it:
        webbrowser.open(Path(written.path).resolve().as_uri())


@main.command(epilog=example("jobledger serve                 # http://127.0.0.1:8001/",
                             "jobledger serve -p 0 --open     # any free port, in the browser"))
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option("-p", "--port", type=click.IntRange(0, 65535), default=8001,
        help="Port to listen on (0: any free port).")
@option("--open", "open_it", is_flag=True, help="Open Datasette in a browser.")
@click.pass_context
def serve(ctx, host, port, open_it):
    """Browse the ledger read-only in Datasette.

    Needs the `serve` extra: pip install 'jobledger[serve]'. Every table and view is described,
    and the report's questions are canned queries (missing_outputs, vanished_outputs,
    param_set_completion).
    """
    ledger = app_of(ctx).ledger(readonly=True)  # refuses a missing or unusable ledger with one line
    path = ledger.path
    ledger.close()
    try:
        api.serve_ledger(path, host=host, port=port, open_browser=open_it)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "datasette":
            raise
        raise api.JobledgerError("serve needs Datasette: pip install 'jobledger[serve]'") from None
