"""Following jobs: sync (once, or --watch until done) and logs."""
from __future__ import annotations

import re
import signal
import sys
import threading
from contextlib import contextmanager

import click

from .. import api, render
from .app import Seconds, app_of, complete_job_ids, job_argument, main, option
from .ledger_cmds import example
from .runtime_cmds import k8s_options


def sync_columns() -> list[str]:
    """sync's rows: SyncChange.as_dict's keys, in its order."""
    return list(api.SyncChange("", "", ("",), "", None, None).as_dict())


class Duration(click.ParamType):
    """``30s``, ``2m``, ``500ms``, ``1h`` or plain seconds."""

    name = "duration"
    _PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
    _SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = self._PATTERN.fullmatch(str(value).strip())
        if not match or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a duration like 30s, 2m or 500ms", param, ctx)
        return float(match.group(1)) * self._SECONDS[match.group(2)]


def change_line(change: api.SyncChange) -> str:
    """``job-…: running → validating → partial (18 verified, 7 missing)``."""
    line = f"{change.job_id}: {' → '.join(render.status_text(step) for step in change.path)}"
    if change.validated:
        counts = [f"{change.verified} verified"] + [
            f"{getattr(change, k)} {k}" for k in ("missing", "errored", "incomplete",
                                                  "stale") if getattr(change, k)]
        line += f" ({', '.join(counts)})"
    elif change.reason and (change.to == "failed" or change.from_status == "submitting"):
        line += f" ({change.reason})"
    if change.error:
        line += f" [error: {change.error}]"
    return line


def _row(change: api.SyncChange, fmt: str) -> dict:
    doc = change.as_dict()
    if fmt not in ("json", "nl"):
        doc["path"] = " → ".join(change.path)
    return doc


@contextmanager
def finish_before_interrupt():
    """Ctrl-C during a sync pass waits for the pass to finish (each job's move is one transaction
    and one registry swap), then interrupts; between passes it interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if asked:
        raise KeyboardInterrupt


@main.command(epilog=example("jobledger sync",
                             "jobledger sync job-5a11e0c3 --watch --interval 10s --until-done",
                             "jobledger sync --dry-run --json"))
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...", shell_complete=complete_job_ids)
@option("--validate/--no-validate", default=True, help="Validate jobs that finished (--no-validate leaves "
        "them in validating).")
@option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@option("--watch", is_flag=True, help="Keep syncing, printing each change as it happens (Ctrl-C to stop).")
@option("--interval", type=Duration(), default="30s", help="With --watch: time between passes.")
@option("--until-done", is_flag=True,
        help="With --watch: stop when every watched job is terminal; exit status "
        "as validate's for the set (0 all verified, 3 some, 4 none).")
@option("--submit-timeout", type=Seconds(), default=api.SUBMIT_TIMEOUT, metavar="SECONDS",
        help="A job in submitting whose runtime has no record of it after this long is failed as 'submit "
             "interrupted' (and may be submitted again).")
@render.output_options
@k8s_options
@click.pass_context
def sync(ctx, job_ids, validate, dry_run, watch, interval, until_done, submit_timeout, output, table_style,
         context, kubeconfig):
    """Update unfinished jobs from their runtime; validate finished."""
    options = dict(context=context, kubeconfig=kubeconfig)
    ledger = app_of(ctx).ledger()
    if watch or until_done:
        if dry_run:
            raise click.UsageError("--watch changes the ledger as jobs move; it has no --dry-run")
        if output not in (None, "json", "nl") or table_style:
            raise click.UsageError("--watch prints change lines, or JSON lines with --json or --nl")
        ctx.exit(_watch(ledger, job_ids, options, validate, interval, until_done, output, submit_timeout))
    with render.Progress("sync") as bar:
        changes = api.sync_jobs(ledger, job_ids, validate=validate, dry_run=dry_run, runtime_options=options,
                                submit_timeout=submit_timeout, progress=bar.update, on_total=bar.start)
    if output is None and table_style is None:
        for change in changes:
            if change.changed or change.error:
                click.echo(change_line(change))
            elif change.note:
                click.echo(f"{change.job_id}: {change.note}")
        if not any(c.changed or c.error for c in changes):
            click.echo(f"no changes ({len(changes)} job(s) checked)")
    else:
        fmt = render.chosen(output, table_style)
        render.output_rows((_row(c, fmt) for c in changes), sync_columns(), fmt, table_style=table_style,
                           colour=render.status_columns("from", "to"))
    if any(c.error for c in changes):
        ctx.exit(1)


def _watch(ledger, job_ids, options, validate, interval, until_done, output, submit_timeout) -> int:
    passes = api.watch(ledger, job_ids, interval=interval, until_done=until_done, validate=validate,
                       runtime_options=options, submit_timeout=submit_timeout)
    watched: set[str] = set(job_ids)
    errors = False
    while True:
        with finish_before_interrupt():
            changes = next(passes, None)
        if changes is None:
            break
        watched.update(c.job_id for c in changes)
        for change in changes:
            errors = errors or bool(change.error)
            if not (change.changed or change.error):
                continue
            if output:
                render.output_rows([change.as_dict()], list(change.as_dict()), "nl")
            else:
                click.echo(change_line(change))
        if not until_done and not changes:
            click.echo("no unfinished jobs to watch")
            return 0
    if errors:
        return 1
    return api.exit_status(ledger, sorted(watched)) if until_done else 0


@main.command(epilog=example("jobledger logs job-5a11e0c3", "jobledger logs job-5a11e0c3 -f",
                             "jobledger logs job-5a11e0c3 --tail 50"))
@job_argument()
@option("-f", "--follow", is_flag=True, help="Keep printing the log until the job's process ends.")
@option("--tail", type=click.IntRange(min=0), metavar="N",
        help="Only the last N lines (then follow, with -f).")
@k8s_options
@click.pass_context
def logs(ctx, job_id, follow, tail, context, kubeconfig):
    """The log of a job's worker (local) or runner pod (Kubernetes)."""
    chunks = api.logs(app_of(ctx).ledger(readonly=True), job_id, follow=follow, tail=tail,
                      runtime_options=dict(context=context, kubeconfig=kubeconfig))
    out = sys.stdout
    for chunk in chunks:
        out.write(chunk)
        out.flush()
