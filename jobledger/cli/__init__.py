"""The `jobledger` command: a thin Click layer over jobledger.api (no SQL, no storage calls here).

Importing the command modules registers their commands on the group defined in ``app``.
"""
from . import (  # noqa: F401  (registers the commands)
    ledger_cmds,
    registry_cmds,
    report_cmds,
    runtime_cmds,
    validate_cmds,
    watch_cmds,
)
from .app import App, app_of, main

__all__ = ["main", "App", "app_of"]
