"""The top-level `jobledger` group, its global options and error handling; commands live beside it.

Every command accepts ``--db`` and ``--registry`` before or after its name (each command carries
them too); usage errors are one ``error:`` line and exit status 2, user-fixable errors one line
and exit status 1 (or the error's own code).
"""
from __future__ import annotations

import io
import math
import os
import sqlite3
import sys
import warnings
from typing import Any

import click
from click.shell_completion import CompletionItem

from .. import api

DB_HELP = "Ledger file (default $XDG_DATA_HOME/jobledger/ledger.db, i.e. ~/.local/share/jobledger/ledger.db)."
REGISTRY_HELP = "Shared registry every status change is mirrored to (az://job-registry[/prefix], file:///path)."


class Seconds(click.FloatRange):
    """A number of seconds, 0 or more. (FloatRange alone lets 'nan' through: NaN is never below 0.)"""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


class App:
    """What every command needs: where the ledger is and which registry (if any) mirrors it."""

    def __init__(self, db: str | None, registry: str | None):
        self.db = db
        self.registry = registry or None
        self._ledgers: list = []

    def ledger(self, *, readonly: bool = False):
        ledger = api.open_ledger(self.db, registry=self.registry, readonly=readonly)
        self._ledgers.append(ledger)
        return ledger

    def close(self) -> None:
        for ledger in self._ledgers:
            ledger.close()


def app_of(ctx: click.Context) -> App:
    """The App of the running command (set up by the top-level group)."""
    return ctx.find_root().obj


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from jobledger or the libraries it uses, as one ``warning:`` line on stderr."""
    click.echo(f"warning: {message}", err=True)


class Option(click.Option):
    """Every option shows its default and its environment variable in --help."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("show_default", True)
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)


def option(*param_decls: str, **kwargs: Any):
    return click.option(*param_decls, cls=Option, **kwargs)


def _set_global(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--db/--registry given after the command name: they override those given before it."""
    if value is None:
        return
    ctx.meta[f"jobledger.{param.name}"] = value
    app = app_of(ctx)
    if app is not None:
        setattr(app, param.name, value)


class Command(click.Command):
    """A jobledger command: also takes --db and --registry after its name."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.params += [
            Option(["--db"], metavar="PATH", expose_value=False, callback=_set_global,
                   help="Same as --db before the command name."),
            Option(["--registry"], metavar="URL", expose_value=False, callback=_set_global,
                   help="Same as --registry before the command name."),
        ]


def complete_job_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job ids from the ledger that start with what was typed (shell completion)."""
    db = ctx.meta.get("jobledger.db") or ctx.find_root().params.get("db") or os.environ.get("JOBLEDGER_DB")
    try:
        return [CompletionItem(job_id) for job_id in api.job_ids(db, prefix=incomplete)]
    except (api.JobledgerError, sqlite3.Error, OSError):
        return []  # no ledger yet: nothing to offer


def job_argument(name: str = "job_id", **kwargs: Any):
    return click.argument(name, shell_complete=complete_job_ids, **kwargs)


class JobledgerGroup(click.Group):
    """Turns user-fixable errors into one line on stderr with their exit status, usage errors
    into one line with exit status 2."""

    command_class = Command

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except api.JobledgerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            click.echo(f"error: the ledger stayed locked by another process for too long ({exc})", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(name="jobledger", cls=JobledgerGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                   "max_content_width": 110})
@option("--db", envvar="JOBLEDGER_DB", metavar="PATH", help=DB_HELP)
@option("--registry", envvar="JOBLEDGER_REGISTRY", metavar="URL", help=REGISTRY_HELP)
@click.version_option(package_name="jobledger")
@click.pass_context
def main(ctx: click.Context, db: str | None, registry: str | None) -> None:
    """jobledger: decide from the artifacts whether a simulation job really finished.

    Shell completion (commands, options and job ids from the ledger):
    eval "$(_JOBLEDGER_COMPLETE=bash_source jobledger)" in ~/.bashrc
    (zsh_source / fish_source for zsh and fish).
    """
    warnings.showwarning = show_warning
    for stream in (sys.stdout, sys.stderr):  # text (from a ledger, a registry) it cannot encode is escaped
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    app = App(db, registry)
    ctx.obj = app
    ctx.call_on_close(app.close)
