"""Helpers shared by the test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from jobledger.cli import main


def cli(*args, ok=(0,)):
    """Run the jobledger CLI in-process. ``ok``: the exit codes allowed (True: 0 only; False/None: any)."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    allowed = (0,) if ok is True else ok
    if allowed:
        assert result.exit_code in allowed, (result.exit_code, result.stdout, result.stderr)
    return result


def copy_tree(source: Path, target: Path) -> Path:
    """Copy a (read-only) tree and make the copy writable, so tests can delete parts of it."""
    shutil.copytree(source, target)
    for folder, dirs, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return target
