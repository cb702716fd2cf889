"""Ledger commands: path, register, status, list, missing, history, sql."""
from __future__ import annotations

import click

from .. import api, render
from .app import app_of, main


@main.command()
@click.pass_context
def path(ctx):
    """Print where the ledger database is."""
    app = app_of(ctx)
    click.echo(str(api.ledger_path(app.db)))


@main.command()
@click.argument("spec")
@click.option("--bundle", metavar="REF", help="Bundle reference for a SimulationStudy spec.")
@click.option("--job-id", metavar="ID", help="Job id (default: the spec's, or derived from the study).")
@click.option("--store", metavar="URL",
              help="Provenance store (default $JOBLEDGER_STORE, $MODELOPS_STORAGE_DIR, "
              "/tmp/modelops/provenance).")
@click.option("--layout", metavar="L",
              help="token (default), bundle, or a path template in the ModelOps DSL.")
@click.option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner", show_default=True)
@click.option("--namespace", metavar="NS", help="Kubernetes namespace the job runs in.")
@click.option("--k8s-name", metavar="NAME", help="Kubernetes Job name (default: the job id).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def register(ctx, spec, bundle, job_id, store, layout, seed_policy, namespace, k8s_name, as_json):
    """Record a job submitted elsewhere and every output it must write."""
    result = api.register(app_of(ctx).ledger(), spec, bundle=bundle, job_id=job_id, store=store,
                          layout=layout,
                          seed_policy=seed_policy, namespace=namespace, k8s_name=k8s_name)
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


@main.command()
@click.argument("job_id")
@click.option("--recursive", is_flag=True, help="Also forget the job's resume jobs (at any depth).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def forget(ctx, job_id, recursive, as_json):
    """Remove a job (e.g. one registered with the wrong options) from this ledger, in one transaction."""
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


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.pass_context
def status(ctx, job_id, as_json):
    """Show a job: status, output counts, last validation, param sets and resume tree."""
    doc = api.status(app_of(ctx).ledger(readonly=True), job_id).as_dict()
    if as_json:
        click.echo(render.to_json(doc))
        return
    pct = f" ({doc['pct_verified']}%)" if doc["pct_verified"] is not None else ""
    pairs = [("job", doc["job_id"]), ("status", doc["status"]), ("bundle", doc["bundle_ref"]),
             ("store", doc["store_url"]), ("layout / seeds", f"{doc['layout']} / {doc['seed_policy']}"),
             ("runtime", doc["runtime"] or "external"), ("parent", doc["parent_job_id"]),
             ("expected", doc["expected"])]
    if doc["validated"] or not doc["expected"]:
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
        shown = sets[:20]
        click.echo(render.table([{"param_id": s["param_id"][:16], "done": f"{s['verified']}/{s['expected']}"}
                                 for s in shown]))
        if len(sets) > len(shown):
            complete = sum(1 for s in sets if s["verified"] == s["expected"])
            click.echo(f"... {len(sets)} param sets, {complete} complete")
    if doc["lineage"]:
        click.echo("\nresume tree:")
        for node in doc["lineage"]:
            click.echo(f"{'  ' * node['depth']}{node['job_id']}  {node['status']}  "
                       f"{node['verified']}/{node['expected']} verified")


@main.command(name="list")
@click.option("--status", "status_filter", metavar="S", help="Only jobs in this status.")
@click.option("--since", metavar="AGE", help="Only jobs updated within AGE (24h, 7d) or since an ISO date.")
@click.option("-n", "limit", type=int, help="At most N jobs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx, status_filter, since, limit, as_json):
    """List jobs, newest first."""
    rows = api.list_jobs(app_of(ctx).ledger(readonly=True), status=status_filter, since=since, limit=limit)
    click.echo(render.to_json(rows) if as_json else render.table(rows))


@main.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["paths", "table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--reason", type=click.Choice(list(api.MISSING_REASONS)), help="Only outputs with this reason.")
@click.option("-n", "limit", type=int, help="At most N rows.")
@click.pass_context
def missing(ctx, job_id, fmt, reason, limit):
    """Expected outputs that are not verified, with the reason."""
    rows = api.missing(app_of(ctx).ledger(readonly=True), job_id, reason=reason, limit=limit)
    if any(r["reason"] == "unchecked" for r in rows):
        click.echo(f"note: no validation has run on {job_id} yet: its outputs are unchecked, not known to be "
                   f"missing (`jobledger validate {job_id}` checks them)", err=True)
    columns = ["path", "reason", "param_id", "seed", "task_id"]
    if fmt == "paths":
        click.echo("\n".join(r["path"] for r in rows))
    elif fmt == "json":
        click.echo(render.to_json([{c: r[c] for c in columns} for r in rows]))
    elif fmt == "csv":
        click.echo(render.to_csv(rows, columns), nl=False)
    else:
        click.echo(render.table(rows, columns + ["detail"]))


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx, job_id, as_json):
    """Status transitions of a job with times and reasons."""
    rows = api.history(app_of(ctx).ledger(readonly=True), job_id)
    click.echo(render.to_json(rows) if as_json else render.table(rows, ["at", "from_status", "to_status",
                                                                        "reason"]))


@main.command()
@click.argument("query")
@click.option("--csv", "fmt", flag_value="csv")
@click.option("--json", "fmt", flag_value="json")
@click.option("--table", "fmt", flag_value="table", default=True)
@click.pass_context
def sql(ctx, query, fmt):
    """Run a read-only SQL query against the ledger."""
    columns, rows = api.run_sql(app_of(ctx).db, query)
    dicts = [dict(zip(columns, r, strict=True)) for r in rows]
    if fmt == "json":
        click.echo(render.to_json(dicts))
    elif fmt == "csv":
        click.echo(render.to_csv(dicts, columns), nl=False)
    else:
        click.echo(render.table(dicts, columns) if columns else "")
