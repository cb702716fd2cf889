"""The ``jobledger`` console script and ``python -m jobledger``.

Importing the CLI takes a good part of a read command's start-up; Ctrl-C pressed meanwhile ends the
command as it does later (``interrupted``, exit status 130) instead of with a traceback."""
from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli(prog_name="jobledger")
