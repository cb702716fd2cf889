"""Ledger commands: path, register, status, list, missing, history, sql, spec."""
from __future__ import annotations

import sys

import click

from .. import api, render
from .app import Seconds, app_of, job_argument, main, option


def example(*lines: str) -> str:
    """An epilog that click prints as written (``\\b`` stops it re-wrapping the lines)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@main.command(epilog=example("jobledger path", "sqlite3 \"$(jobledger path)\" .tables"))
@click.pass_context
def path(ctx):
    """Print where the ledger database is."""
    click.echo(str(api.ledger_path(app_of(ctx).db)))


@main.command(epilog=example("jobledger register job-5a11e0c3.json --store /tmp/modelops/provenance",
                             "jobledger register study.json --bundle repo@sha256:<hex> --seed-policy task"))
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@option("--bundle", metavar="REF", help="Bundle reference (needed for a SimulationStudy spec).")
@option("--job-id", metavar="ID", help="Job id (default: the spec's, or derived from the study).")
@option("--store", metavar="URL", envvar=["JOBLEDGER_STORE", "MODELOPS_STORAGE_DIR"],
        help="Provenance store the outputs are expected in (default /tmp/modelops/provenance).")
@option("--layout", metavar="L", default="token",
        help="token, bundle, or a path template in the ModelOps DSL.")
@option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner",
        help="runner: the seeds the ModelOps runner really runs; task: each task's own seed.")
@option("--namespace", metavar="NS", help="Kubernetes namespace the job runs in.")
@option("--k8s-name", metavar="NAME", help="Kubernetes Job name (default: the job id).")
@option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def register(ctx, spec, bundle, job_id, store, layout, seed_policy, namespace, k8s_name, as_json):
    """Record a job submitted elsewhere and every output it must write."""
    with render.Progress("registering") as bar:
        result = api.register(app_of(ctx).ledger(), spec, bundle=bundle, job_id=job_id, store=store,
                              layout=layout, seed_policy=seed_policy, namespace=namespace, k8s_name=k8s_name,
                              progress=bar.update, on_total=bar.start)
    for note in result.warnings:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        doc = result.as_dict()
        del doc["warnings"]  # printed on stderr above
        click.echo(render.to_json(doc))
    elif result.created:
        click.echo(f"{result.job_id}: registered, {result.expected} expected outputs")
    else:
        click.echo(f"{result.job_id}: already registered with this spec ({result.expected} expected outputs)")


@main.command(epilog=example("jobledger forget job-5a11e0c3", "jobledger forget job-5a11e0c3 --recursive"))
@job_argument()
@option("--recursive", is_flag=True, help="Also forget the job's resume jobs (at any depth).")
@option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def forget(ctx, job_id, recursive, as_json):
    """Remove a job (registered wrongly, say) from this ledger."""
    result = api.forget(app_of(ctx).ledger(), job_id, recursive=recursive)
    if as_json:
        click.echo(render.to_json(result.as_dict()))
    else:
        children = result.job_ids[1:]
        also = f", with its resume job(s) {', '.join(children)}" if children else ""
        click.echo(f"{job_id}: forgotten{also}")
        if result.registry:
            click.echo(f"removed from this ledger only: the registry {result.registry} still has it "
                       f"(`jobledger pull {job_id}` brings it back)")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


PARAM_SETS_SHOWN = 20


@main.command(epilog=example("jobledger status job-5a11e0c3", "jobledger status job-5a11e0c3 --json",
                             "jobledger status job-5a11e0c3 --csv   # the param sets, one row each"))
@job_argument()
@render.output_options(document="the whole status document")
@click.pass_context
def status(ctx, job_id, output, table_style):
    """Show a job: status, counts, last validation, param sets, tree."""
    doc = api.status(app_of(ctx).ledger(readonly=True), job_id).as_dict()
    if output == "json":
        click.echo(render.to_json(doc))
        return
    if output in ("nl", "csv", "tsv"):  # the rows of this command are its param sets
        render.output_rows(doc["param_sets"], ["param_id", "expected", "verified"], output)
        return
    pct = f" ({doc['pct_verified']}%)" if doc["pct_verified"] is not None else ""
    pairs = [("job", doc["job_id"]), ("status", render.status_text(doc["status"])), ("bundle",
                                                                                     doc["bundle_ref"]),
             ("store", doc["store_url"]), ("layout / seeds", f"{doc['layout']} / {doc['seed_policy']}"),
             ("runtime", doc["runtime"] or "external"), ("parent", doc["parent_job_id"]),
             ("expected", doc["expected"])]
    # observed states come from a validation, or from the result paths ModelOps reported (a job without spec)
    if doc["validated"] or doc["unchecked"] < doc["expected"] or not doc["expected"]:
        pairs += [("verified", f"{doc['verified']}{pct}"), ("missing", doc["missing"]),
                  ("errored", doc["errored"]), ("incomplete", doc["incomplete"])]
        if doc["unchecked"]:
            pairs.append(("unchecked", doc["unchecked"]))
    else:
        pairs.append(("verified", f"not validated yet ({doc['unchecked']} unchecked)"))
    if doc["stale"]:
        pairs.append(("stale", f"{doc['stale']} (aggregations over other replicates than the current ones)"))
    if doc["given_up"]:
        pairs.append(("given up", f"{doc['given_up']} (errored in every attempt: resume stopped retrying)"))
    if doc["error_message"]:
        pairs.append(("error", doc["error_message"]))
    last = doc["last_validation"]
    if last:
        pairs.append(("last validation", f"{last['finished_at'] or last['started_at']} {last['outcome']} "
                                         f"({last['strategy']}, {last['requests']} requests, "
                                         f"{last['unexpected']} unexpected)"))
    click.echo(render.key_values(pairs))
    sets = doc["param_sets"]
    if sets:
        click.echo("\nparam sets (verified/expected):")
        whole = table_style is not None or output == "table"  # asked for the table: every param set
        shown = sets if whole else sets[:PARAM_SETS_SHOWN]
        render.output_rows(([s["param_id"][:16], f"{s['verified']}/{s['expected']}"] for s in shown),
                           ["param_id", "done"], "table", table_style=table_style)
        if len(sets) > len(shown):
            complete = sum(1 for s in sets if s["verified"] == s["expected"])
            click.echo(f"... {len(sets)} param sets, {complete} complete (--table shows them all)")
    if doc["lineage"]:
        click.echo("\nresume tree:")
        for node in doc["lineage"]:
            click.echo(f"{'  ' * node['depth']}{node['job_id']}  {render.status_text(node['status'])}  "
                       f"{node['verified']}/{node['expected']} verified")


LIST_COLUMNS = ["job_id", "status", "runtime", "parent_job_id", "expected", "verified", "missing", "errored",
                "incomplete", "updated_at"]


@main.command(name="list", epilog=example("jobledger list",
                                          "jobledger list --status partial --since 24h -n 20",
                                          "jobledger list --nl | jq -r .job_id"))
@option("--status", "status_filter", type=click.Choice(api.STATUSES), help="Only jobs in this status.")
@option("--since", metavar="AGE", help="Only jobs updated within AGE (30m, 24h, 7d) or since an ISO date.")
@option("-n", "limit", type=click.IntRange(min=1), help="At most N jobs.")
@render.output_options
@click.pass_context
def list_(ctx, status_filter, since, limit, output, table_style):
    """List jobs, newest first, with their output counts."""
    rows = api.list_jobs(app_of(ctx).ledger(readonly=True), status=status_filter, since=since, limit=limit)
    render.output_rows(rows, LIST_COLUMNS, render.chosen(output, table_style), table_style=table_style,
                       colour=render.status_columns("status"))


FORMAT_ALIASES = ("paths", "table", "json", "nl", "csv", "tsv")


@main.command(epilog=example("jobledger missing job-5a11e0c3",
                             "jobledger missing job-5a11e0c3 --reason errored --csv",
                             "jobledger missing job-5a11e0c3 --format paths | xargs -I{} ls /store/{}"))
@job_argument()
@option("--format", "format_alias", type=click.Choice(FORMAT_ALIASES),
        help="paths (one per line), or the same as --table/--json/--nl/--csv/--tsv.")
@option("--reason", type=click.Choice(api.MISSING_REASONS), help="Only outputs with this reason.")
@option("-n", "limit", type=click.IntRange(min=1), help="At most N rows.")
@render.output_options
@click.pass_context
def missing(ctx, job_id, format_alias, reason, limit, output, table_style):
    """Outputs not verified yet, with the reason, streamed."""
    ledger = app_of(ctx).ledger(readonly=True)
    rows = api.missing(ledger, job_id, reason=reason, limit=limit)
    if reason in (None, "unchecked") and api.has_unchecked(ledger, job_id):
        click.echo(f"note: no validation has run on {job_id} yet: its outputs are unchecked, not known to be "
                   f"missing (`jobledger validate {job_id}` checks them)", err=True)
    fmt = render.chosen(output or format_alias, table_style)
    if fmt == "paths":
        out = sys.stdout
        for row in rows:
            out.write(row[0] + "\n")
        return
    render.output_rows(rows, rows.columns, fmt, table_style=table_style, colour=render.status_columns())


@main.command(epilog=example("jobledger history job-5a11e0c3", "jobledger history job-5a11e0c3 --csv"))
@job_argument()
@render.output_options
@click.pass_context
def history(ctx, job_id, output, table_style):
    """Status transitions of a job, with times and reasons."""
    rows = api.history(app_of(ctx).ledger(readonly=True), job_id)
    render.output_rows(rows, ["at", "from_status", "to_status", "reason"], render.chosen(output, table_style),
                       table_style=table_style, colour=render.status_columns("from_status", "to_status"))


@main.command(epilog=example("jobledger sql \"SELECT * FROM job_summary\"",
                             "jobledger sql \"SELECT path, detail FROM unverified_outputs\" --csv",
                             "jobledger sql \"SELECT * FROM job_specs\" --json   # BLOBs as base64"))
@click.argument("query")
@option("--timeout", type=Seconds(), default=api.DEFAULT_SQL_TIMEOUT,
        help="Stop the query after this many seconds (0: no limit); Ctrl-C stops it at once.")
@render.output_options
@click.pass_context
def sql(ctx, query, timeout, output, table_style):
    """Run a read-only SQL query against the ledger (rows streamed)."""
    rows = api.run_sql(app_of(ctx).db, query, timeout=timeout or None)
    if not rows.columns:  # a statement without result columns (e.g. a PRAGMA that sets)
        for _ in rows:
            pass
        return
    render.output_rows(rows, rows.columns, render.chosen(output, table_style), table_style=table_style)


@main.command(epilog=example("jobledger spec job-5a11e0c3 > job-5a11e0c3.json",
                             "jobledger spec job-5a11e0c3 -o spec.json",
                             "diff <(jobledger spec job-a) <(jobledger spec job-b)"))
@job_argument()
@option("-o", "--output", "out", type=click.Path(dir_okay=False, writable=True),
        help="Write it here (default stdout).")
@click.pass_context
def spec(ctx, job_id, out):
    """The submitted spec of a job, as JSON in ModelOps key order."""
    text = api.spec(app_of(ctx).ledger(readonly=True), job_id)
    if out:
        api.write_output(out, text.encode("utf-8"))
        click.echo(f"{job_id}: spec written to {out}", err=True)
    else:
        click.echo(text, nl=False)
