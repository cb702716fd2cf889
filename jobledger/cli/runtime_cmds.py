"""Runtime commands: submit, sync, resume, cancel, prune."""
from __future__ import annotations

from pathlib import Path

import click

from .. import api, render
from .app import app_of, main


def _job_options(f):
    """Options of the Kubernetes Job that runs a job (submit, resume)."""
    f = click.option("--image", metavar="IMG", help="Runner image (default the ModelOps dask runner, tag "
                     "$MODELOPS_RUNNER_TAG or latest).")(f)
    f = click.option("--service-account", metavar="NAME", help="Service account of the runner pod (default "
                     "'default', as ModelOps).")(f)
    f = click.option("--postgres-secret", metavar="SECRET", help="Give the runner POSTGRES_URL from this "
                     "secret's key POSTGRES_URL.")(f)
    return f


def _k8s_options(f):
    f = click.option("--context", metavar="CTX",
                     help="kubeconfig context (default: current context, or in-cluster).")(f)
    f = click.option("--kubeconfig", metavar="PATH", envvar="KUBECONFIG",
                     help="kubeconfig file (env KUBECONFIG).")(f)
    return f


def _dump(doc, as_json: bool) -> str:
    if as_json:
        return render.to_json(doc)
    import yaml
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120).rstrip()


@main.command()
@click.argument("spec")
@click.option("--bundle", metavar="REF", help="Bundle reference for a SimulationStudy spec.")
@click.option("--runtime", type=click.Choice(["k8s", "local"]), envvar="JOBLEDGER_RUNTIME", default="local",
              show_default=True, help="Where the job runs (env JOBLEDGER_RUNTIME).")
@click.option("--store", metavar="URL",
              help="Provenance store the workers write to (default $JOBLEDGER_STORE, "
              "$MODELOPS_STORAGE_DIR, /tmp/modelops/provenance).")
@click.option("--namespace", metavar="NS", help="Kubernetes namespace (default modelops-dask-dev).")
@_job_options
@click.option("--bundle-path", type=click.Path(file_okay=False), metavar="DIR",
              help="local runtime: directory the entrypoints are imported from.")
@click.option("--job-id", metavar="ID", help="Job id (default: the spec's, or derived from the study).")
@click.option("--layout", metavar="L", help="token (default), bundle, or a path template.")
@click.option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner", show_default=True)
@_k8s_options
@click.option("--dry-run", is_flag=True, help="Print the spec and what would be created; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def submit(ctx, spec, bundle, runtime, store, namespace, image, service_account, postgres_secret, bundle_path,
           job_id, layout, seed_policy, context, kubeconfig, dry_run, as_json):
    """Register a job and start it on a runtime: pending → submitting → scheduled."""
    options = dict(namespace=namespace, image=image, service_account=service_account,
                   postgres_secret=postgres_secret, bundle_path=bundle_path, context=context,
                   kubeconfig=kubeconfig)
    if dry_run:
        preview = api.preview(app_of(ctx).db, spec, runtime=runtime, bundle=bundle, job_id=job_id,
                              store=store, layout=layout, runtime_options=options)
        click.echo(_dump(preview, as_json))
        return
    result = api.submit(app_of(ctx).ledger(), spec, runtime=runtime, bundle=bundle, job_id=job_id,
                        store=store, layout=layout, seed_policy=seed_policy, runtime_options=options)
    for note in result.warnings:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(render.to_json(result.as_dict()))
    else:
        click.echo(f"{result.job_id}: pending → submitting → {result.status} ({runtime}, "
                   f"{result.expected} expected outputs)")


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Validate jobs that finished (--no-validate leaves them in validating).")
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a list of objects.")
@click.option("--submit-timeout", type=click.FloatRange(min=0), default=api.SUBMIT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="A job in submitting whose runtime has no record of it after this long "
              "is failed as 'submit interrupted' (and may be submitted again).")
@_k8s_options
@click.pass_context
def sync(ctx, job_ids, validate, dry_run, as_json, submit_timeout, context, kubeconfig):
    """Update unfinished jobs (or those named) from their runtime, and validate finished ones."""
    changes = api.sync_jobs(app_of(ctx).ledger(), job_ids, validate=validate, dry_run=dry_run,
                            runtime_options=dict(context=context, kubeconfig=kubeconfig),
                            submit_timeout=submit_timeout)
    if as_json:
        click.echo(render.to_json([c.as_dict() for c in changes]))
    else:
        for change in changes:
            if change.changed or change.error:
                click.echo(change_line(change))
            elif change.note:
                click.echo(f"{change.job_id}: {change.note}")
        if not any(c.changed or c.error for c in changes):
            click.echo(f"no changes ({len(changes)} job(s) checked)")
    if any(c.error for c in changes):
        ctx.exit(1)


def change_line(change: api.SyncChange) -> str:
    """``job-…: running → validating → partial (18 verified, 7 missing)``."""
    line = f"{change.job_id}: {' → '.join(change.path)}"
    if change.validated:
        counts = [f"{change.verified} verified"] + [
            f"{getattr(change, k)} {k}" for k in ("missing", "errored", "incomplete", "stale")
            if getattr(change, k)]
        line += f" ({', '.join(counts)})"
    elif change.reason and (change.to == "failed" or change.from_status == "submitting"):
        line += f" ({change.reason})"
    if change.error:
        line += f" [error: {change.error}]"
    return line


def _reasons(value: str) -> tuple[str, ...]:
    try:
        return api.check_resume_reasons(value.split(","))
    except api.JobledgerError as exc:
        raise click.BadParameter(str(exc).removeprefix("--reason: "), param_hint="--reason") from None


@main.command()
@click.argument("job_id")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --dry-run: the plan object).")
@click.option("--bundle", metavar="REF", help="Run the resume jobs with another bundle (their paths change).")
@click.option("--runtime", type=click.Choice(["k8s", "local"]), help="Runtime (default: the parent's).")
@click.option("--bundle-path", type=click.Path(file_okay=False), metavar="DIR",
              help="local runtime: entrypoint directory (default: the parent's).")
@click.option("--namespace", metavar="NS", help="Kubernetes namespace (default: the parent's).")
@click.option("--reason", "reasons", metavar="LIST", callback=lambda ctx, param, value: _reasons(value),
              default=",".join(api.RESUME_REASONS), show_default=True,
              help="Which not-verified outputs to run again (comma-separated).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=api.MAX_ATTEMPTS, show_default=True,
              help="Leave out outputs that came back errored in this many generations of the resume tree.")
@_job_options
@_k8s_options
@click.pass_context
def resume(ctx, job_id, dry_run, as_json, bundle, runtime, bundle_path, namespace, reasons, max_attempts,
           image, service_account, postgres_secret, context, kubeconfig):
    """Run only the not-verified outputs of a partial or failed job, as child jobs <root>-rN."""
    ledger = app_of(ctx).ledger(readonly=dry_run)
    if dry_run:
        plan = api.plan_resume(ledger, job_id, bundle=bundle, runtime=runtime, reasons=reasons,
                               max_attempts=max_attempts)
        if as_json:
            click.echo(render.to_json(plan.as_dict()))
        else:
            click.echo(f"{job_id}: {plan.outputs} output(s) in {len(plan.jobs)} resume job(s), "
                       f"over-compute {plan.overcompute}")
            for job in plan.jobs:
                click.echo(f"  {job.job_id}: {len(job.tasks)} task(s)")
            for note in plan.notes:
                click.echo(f"note: {note}", err=True)
        return
    options = dict(namespace=namespace, image=image, service_account=service_account,
                   postgres_secret=postgres_secret, bundle_path=bundle_path, context=context,
                   kubeconfig=kubeconfig)
    resumed = api.resume(ledger, job_id, bundle=bundle, runtime=runtime, runtime_options=options,
                         reasons=reasons, max_attempts=max_attempts)
    plan = resumed.plan
    if as_json:
        click.echo(render.to_json(resumed.as_dict()))
        return
    click.echo(f"{job_id}: resuming {plan.outputs} output(s) in {len(resumed.submitted)} job(s), "
               f"over-compute {plan.overcompute}")
    for child in resumed.submitted:
        click.echo(f"  {child.job_id}: {child.status} ({child.expected} expected outputs)")
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


@main.command()
@click.argument("job_id")
@_k8s_options
@click.pass_context
def cancel(ctx, job_id, context, kubeconfig):
    """Stop a job (delete its Kubernetes Job / stop its local worker) and mark it cancelled."""
    options = dict(context=context, kubeconfig=kubeconfig)
    done = api.cancel_job(app_of(ctx).ledger(), job_id, runtime_options=options)
    if done.previous_status == "cancelled":
        click.echo(f"{done.job_id}: {done.note}")
    else:
        click.echo(f"{done.job_id}: cancelled" + (f" ({done.note})" if done.note else ""))


@main.command()
@click.argument("spec")
@click.option("--store", metavar="URL", required=True, help="Provenance store to check.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="Write the pruned spec here "
              "(default stdout).")
@click.option("--bundle", metavar="REF", help="Bundle reference for a SimulationStudy spec.")
@click.option("--layout", metavar="L", default="token", show_default=True)
@click.option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner", show_default=True)
def prune(spec, store, out, bundle, layout, seed_policy):
    """Write SPEC without the tasks whose outputs are already verified in the store."""
    result = api.prune(spec, store, bundle=bundle, layout=layout, seed_policy=seed_policy)
    text = render.to_json(result.spec) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    click.echo(f"kept {result.kept} task(s), dropped {result.dropped} (outputs verified)"
               + (f", over-compute {result.overcompute}" if result.overcompute else ""), err=True)
