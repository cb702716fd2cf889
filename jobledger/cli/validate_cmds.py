"""`jobledger validate`: check a job's outputs in its provenance store and decide its status."""
from __future__ import annotations

import click

from .. import api, render
from .app import Seconds, app_of, job_argument, main, option
from .ledger_cmds import example


def _explain_text(plan: api.Plan) -> str:
    lines = [f"job {plan.job_id} ({plan.status}): {plan.expected} expected outputs in {plan.store}",
             "prefixes to list:"]
    lines += [f"  {p or '(store root)'}" for p in plan.prefixes] or ["  (none)"]
    if plan.parts and plan.parts != plan.prefixes:
        lines.append(f"listed as {len(plan.parts)} parts in parallel")
    lines.append(f"estimated requests ({plan.estimate_basis}): list {plan.estimates['list']}, "
                 f"head {plan.estimates['head']}")
    lines.append(f"strategy: {plan.strategy} ({plan.reason})")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _result_text(result: api.ValidationResult) -> str:
    if not result.validated:
        return f"{result.note}\n{result.verified}/{result.expected} verified per the ledger"
    # A decision always passes through validating; a job already there shows it once (and a finished job
    # re-validated with --force shows both ends: partial → validating → partial).
    steps = [result.previous_status, "validating", result.status]
    path = [render.status_text(s) for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
    status = render.status_text(result.status)
    move = " → ".join(path) if result.transitioned else f"{status} (no transition)"
    unexpected = "not checked" if result.unexpected is None else result.unexpected
    return (f"{result.job_id}: {move}, outcome {result.outcome}\n"
            f"{result.verified}/{result.expected} verified, {result.missing} missing, "
            f"{result.errored} errored, {result.incomplete} incomplete, "
            + (f"{result.stale} stale, " if result.stale else "") + f"{unexpected} unexpected\n"
            f"{result.strategy} strategy, {result.requests} requests, {result.seconds:.2f} s "
            f"(run {result.run_id}, {result.changed} outputs changed state)"
            + (f"\nnote: {result.note}" if result.note else ""))


@main.command(epilog=example("jobledger validate job-5a11e0c3", "jobledger validate job-5a11e0c3 --explain",
                             "jobledger validate --force --deep --checksums job-5a11e0c3 --json"))
@job_argument()
@option("--force", is_flag=True, help="Re-validate a succeeded/partial/failed job and revise its status.")
@option("--strategy", type=click.Choice(api.STRATEGIES), default="auto",
        help="scan: walk a local store's param-set directories; list: list the job's prefixes; head: probe "
             "each expected output; auto: the fewest requests.")
@option("--deep", is_flag=True, help="Also read metadata.json/result.json and compare artifact sizes.")
@option("--checksums", is_flag=True, help="With --deep, also verify each artifact's BLAKE2b-256.")
@option("--read-timeout", type=Seconds(), default=api.READ_TIMEOUT, metavar="SECONDS",
        help="An output one of whose file reads takes longer than this (a hung mount, a stalled download) "
             "is given up, errored (--deep) or an aggregation incomplete, and the others are still read "
             "(0: no limit).")
@option("--explain", "explain_only", is_flag=True, help="Print the plan and do nothing else.")
@option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def validate(ctx, job_id, force, strategy, deep, checksums, read_timeout, explain_only, as_json):
    """Decide from the artifacts whether a job's outputs are all there.

    Exit status: 0 all verified, 3 some outputs not verified, 4 none verified, 1 error.
    """
    app = app_of(ctx)
    if explain_only:
        plan = api.explain_validation(app.ledger(readonly=True), job_id, strategy=strategy)
        click.echo(render.to_json(plan.as_dict()) if as_json else _explain_text(plan))
        return
    ledger = app.ledger()
    with render.Progress(f"validating {job_id}", api.counts(ledger, job_id)["expected"]) as bar:
        result = api.validate_job(ledger, job_id, force=force, strategy=strategy, deep=deep,
                                  checksums=checksums, read_timeout=read_timeout or None, progress=bar)
    click.echo(render.to_json(result.as_dict()) if as_json else _result_text(result))
    if result.exit_code:
        ctx.exit(result.exit_code)
