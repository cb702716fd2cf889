"""The top-level `jobledger` group, its global options and error handling; commands live beside it."""
from __future__ import annotations

import os
import sqlite3
import sys
import warnings

import click

from .. import api


class App:
    """What every command needs: where the ledger is and which registry (if any) mirrors it."""

    def __init__(self, db: str | None, registry: str | None):
        self.db = db
        self.registry = registry or os.environ.get("JOBLEDGER_REGISTRY") or None
        self._ledgers: list = []

    def ledger(self, *, readonly: bool = False):
        ledger = api.open_ledger(self.db, registry=self.registry, readonly=readonly)
        self._ledgers.append(ledger)
        return ledger

    def close(self) -> None:
        for ledger in self._ledgers:
            ledger.close()


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from jobledger or the libraries it uses, as one ``warning:`` line on stderr."""
    click.echo(f"warning: {message}", err=True)


def app_of(ctx: click.Context) -> App:
    """The App of the running command (set up by the top-level group)."""
    return ctx.find_root().obj


class JobledgerGroup(click.Group):
    """Turns user-fixable errors into one line on stderr and exit status 1."""

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


@click.group(cls=JobledgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="JOBLEDGER_DB", metavar="PATH",
              help="Ledger file (default ~/.local/share/jobledger/ledger.db).")
@click.option("--registry", metavar="URL",
              help="Shared registry to mirror jobs to (az://job-registry, file:///path); "
              "env JOBLEDGER_REGISTRY.")
@click.version_option(package_name="jobledger")
@click.pass_context
def main(ctx: click.Context, db: str | None, registry: str | None) -> None:
    """jobledger: decide from the artifacts whether a simulation job really finished."""
    warnings.showwarning = show_warning
    app = App(db, registry)
    ctx.obj = app
    ctx.call_on_close(app.close)
