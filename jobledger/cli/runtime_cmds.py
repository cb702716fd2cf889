"""Runtime commands: submit, resume, cancel, prune (sync and logs: watch_cmds)."""
from __future__ import annotations

import click

from .. import api, render
from .app import app_of, job_argument, main, option
from .ledger_cmds import example

STORE_ENV = ["JOBLEDGER_STORE", "MODELOPS_STORAGE_DIR"]


def job_options(f):
    """Options of the Kubernetes Job that runs a job (submit, resume)."""
    f = option("--image", metavar="IMG",
               help="Runner image (default the ModelOps dask runner, tag $MODELOPS_RUNNER_TAG or latest).")(f)
    f = option("--service-account", metavar="NAME",
               help="Service account of the runner pod (default 'default', as ModelOps).")(f)
    f = option("--postgres-secret", metavar="SECRET",
               help="Give the runner POSTGRES_URL from this secret's key POSTGRES_URL.")(f)
    return f


def k8s_options(f):
    f = option("--context", metavar="CTX",
               help="kubeconfig context (default: current context, or in-cluster).")(f)
    f = option("--kubeconfig", metavar="PATH", envvar="KUBECONFIG",
               help="kubeconfig file (default ~/.kube/config).")(f)
    return f


def dump(doc, as_json: bool) -> str:
    """JSON, or YAML as people write Kubernetes manifests: block style, no anchors or aliases."""
    if as_json:
        return render.to_json(doc)
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(doc, Dumper=NoAliases, sort_keys=False, allow_unicode=True, width=120).rstrip()


@main.command(epilog=example(
    "jobledger submit study.json --bundle-path ./model --store ./store   # local; bundle from the directory",
    "jobledger submit job.json --runtime k8s --namespace modelops-dask-dev",
    "jobledger submit job.json --runtime k8s --dry-run   # the spec and the Job, changes nothing"))
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@option("--bundle", metavar="REF",
        help="Bundle reference for a SimulationStudy spec (default with --bundle-path: the directory's "
             "sha256 content digest).")
@option("--runtime", type=click.Choice(["k8s", "local"]), envvar="JOBLEDGER_RUNTIME", default="local",
        help="Where the job runs.")
@option("--store", metavar="URL", envvar=STORE_ENV,
        help="Provenance store the workers write to (default /tmp/modelops/provenance).")
@option("--namespace", metavar="NS", help="Kubernetes namespace (default modelops-dask-dev).")
@job_options
@option("--bundle-path", type=click.Path(file_okay=False), metavar="DIR",
        help="local runtime: directory the entrypoints are imported from.")
@option("--job-id", metavar="ID", help="Job id (default: the spec's, or derived from the study).")
@option("--layout", metavar="L", default="token", help="token, bundle, or a path template.")
@option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner",
        help="runner: the seeds the ModelOps runner really runs; task: each task's own seed.")
@k8s_options
@option("--dry-run", is_flag=True, help="Print the spec and what would be created; change nothing.")
@option("--json", "as_json", is_flag=True, help="Print JSON (with --dry-run: instead of YAML).")
@click.pass_context
def submit(ctx, spec, bundle, runtime, store, namespace, image, service_account, postgres_secret, bundle_path,
           job_id, layout, seed_policy, context, kubeconfig, dry_run, as_json):
    """Register a job and start it: pending → submitting → scheduled."""
    options = dict(namespace=namespace, image=image, service_account=service_account,
                   postgres_secret=postgres_secret, bundle_path=bundle_path, context=context,
                   kubeconfig=kubeconfig)
    if dry_run:
        preview = api.preview(app_of(ctx).db, spec, runtime=runtime, bundle=bundle, job_id=job_id,
                              store=store, layout=layout, runtime_options=options)
        click.echo(dump(preview, as_json))
        return
    with render.Progress("registering") as bar:
        result = api.submit(app_of(ctx).ledger(), spec, runtime=runtime, bundle=bundle, job_id=job_id,
                            store=store, layout=layout, seed_policy=seed_policy, runtime_options=options,
                            progress=bar.update, on_total=bar.start)
    if bundle is None and bundle_path and result.bundle_ref:
        click.echo(f"bundle {result.bundle_ref} (content digest of {bundle_path})", err=True)
    for note in result.warnings:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(render.to_json(result.as_dict()))
    else:
        click.echo(f"{result.job_id}: pending → submitting → {render.status_text(result.status)} ({runtime}, "
                   f"{result.expected} expected outputs)")


def _reasons(value: str) -> tuple[str, ...]:
    try:
        return api.check_resume_reasons(value.split(","))
    except api.JobledgerError as exc:
        raise click.BadParameter(str(exc).removeprefix("--reason: "), param_hint="--reason") from None


@main.command(epilog=example("jobledger resume job-5a11e0c3 --dry-run", "jobledger resume job-5a11e0c3",
                             "jobledger resume job-5a11e0c3 --reason missing,incomplete --max-attempts 2"))
@job_argument()
@option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@option("--json", "as_json", is_flag=True, help="Print JSON (with --dry-run: the plan object).")
@option("--bundle", metavar="REF", help="Run the resume jobs with another bundle (their paths change).")
@option("--runtime", type=click.Choice(["k8s", "local"]), help="Runtime (default: the parent's).")
@option("--bundle-path", type=click.Path(file_okay=False), metavar="DIR",
        help="local runtime: entrypoint directory (default: the parent's).")
@option("--namespace", metavar="NS", help="Kubernetes namespace (default: the parent's).")
@option("--reason", "reasons", metavar="LIST", callback=lambda ctx, param, value: _reasons(value),
        default=",".join(api.RESUME_REASONS),
        help="Which not-verified outputs to run again (comma-separated).")
@option("--max-attempts", type=click.IntRange(min=1), default=api.MAX_ATTEMPTS,
        help="Leave out outputs that came back errored in this many generations of the resume tree.")
@job_options
@k8s_options
@click.pass_context
def resume(ctx, job_id, dry_run, as_json, bundle, runtime, bundle_path, namespace, reasons, max_attempts,
           image, service_account, postgres_secret, context, kubeconfig):
    """Re-run only the outputs a partial/failed job lacks (<root>-rN)."""
    ledger = app_of(ctx).ledger(readonly=dry_run)
    if dry_run:
        with render.Progress(f"planning resume of {job_id}") as bar:
            plan = api.plan_resume(ledger, job_id, bundle=bundle, runtime=runtime, reasons=reasons,
                                   max_attempts=max_attempts, progress=bar)
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
    with render.Progress(f"planning resume of {job_id}") as bar:
        resumed = api.resume(ledger, job_id, bundle=bundle, runtime=runtime, runtime_options=options,
                             reasons=reasons, max_attempts=max_attempts, progress=bar)
    plan = resumed.plan
    if as_json:
        click.echo(render.to_json(resumed.as_dict()))
        return
    click.echo(f"{job_id}: resuming {plan.outputs} output(s) in {len(resumed.submitted)} job(s), "
               f"over-compute {plan.overcompute}")
    for child in resumed.submitted:
        status = render.status_text(child.status)
        click.echo(f"  {child.job_id}: {status} ({child.expected} expected outputs)")
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


@main.command(epilog=example("jobledger cancel job-5a11e0c3"))
@job_argument()
@k8s_options
@click.pass_context
def cancel(ctx, job_id, context, kubeconfig):
    """Stop a job (Kubernetes Job or local worker), mark it cancelled."""
    options = dict(context=context, kubeconfig=kubeconfig)
    done = api.cancel_job(app_of(ctx).ledger(), job_id, runtime_options=options)
    if done.previous_status == "cancelled":
        click.echo(f"{done.job_id}: {done.note}")
    else:
        note = f" ({done.note})" if done.note else ""
        click.echo(f"{done.job_id}: {render.status_text('cancelled')}{note}")


@main.command(epilog=example("jobledger prune job.json --store /tmp/modelops/provenance -o remaining.json"))
@click.argument("spec", type=click.Path(dir_okay=False, allow_dash=True))
@option("--store", metavar="URL", required=True, help="Provenance store to check.")
@option("-o", "--output", "out", type=click.Path(dir_okay=False),
        help="Write the pruned spec here (default stdout).")
@option("--bundle", metavar="REF", help="Bundle reference for a SimulationStudy spec.")
@option("--layout", metavar="L", default="token", help="token, bundle, or a path template.")
@option("--seed-policy", type=click.Choice(["runner", "task"]), default="runner",
        help="runner: the seeds the ModelOps runner really runs; task: each task's own seed.")
def prune(spec, store, out, bundle, layout, seed_policy):
    """Write SPEC without the tasks whose outputs are already verified."""
    result = api.prune(spec, store, bundle=bundle, layout=layout, seed_policy=seed_policy)
    text = render.to_json(result.spec) + "\n"
    if out:
        api.write_output(out, text.encode("utf-8"))
    else:
        click.echo(text, nl=False)
    click.echo(f"kept {result.kept} task(s), dropped {result.dropped} (outputs verified)"
               + (f", over-compute {result.overcompute}" if result.overcompute else ""), err=True)
