"""Defaults a user can change on the command line or in the environment, in a module that imports
(almost) nothing.

The CLI shows them in ``--help`` when it starts; keeping them here lets it do so without importing
the machinery behind them (sync, resume and the runtimes), which a read command never needs.
"""
import os

from .errors import JobledgerError, shown

# How long a job may stay in ``submitting`` with nothing in its runtime before sync calls the submit
# interrupted (seconds): longer than any submit takes (a spec upload and one create request).
SUBMIT_TIMEOUT = 600.0

# What resume re-runs by default, and how often an output may come back errored before it stops
# (like Kubernetes's per-index backoff limit): each job of the resume tree counts once.
RESUME_REASONS = ("missing", "incomplete", "errored")
MAX_ATTEMPTS = 3

# Seconds one file read of a validation (a deep check's, an aggregation's) may take before its output
# is given up: a read stuck on a hung mount or a stalled download (validate --read-timeout).
READ_TIMEOUT = 60.0

# How validate looks at a store (validate --strategy): auto chooses among the other three.
STRATEGIES = ("auto", "scan", "list", "head")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """A whole-number setting from the environment (``1_000_000`` allowed); anything else is one error
    line naming the variable, not a traceback."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingError(f"{name}={shown(text)}: not a whole number") from None
    if value < minimum:
        raise SettingError(f"{name}={value}: must be at least {minimum}")
    return value


class SettingError(JobledgerError):
    """An environment setting jobledger cannot use."""
