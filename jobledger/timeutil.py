"""Timestamps as the ledger and the registry write them, and `--since` durations."""
from __future__ import annotations

import datetime as _dt
import re

from .errors import JobledgerError

_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadDuration(JobledgerError):
    """A `--since` value that is neither a duration nor an ISO date (a usage error)."""

    exit_code = 2


def utcnow() -> str:
    return _iso(_dt.datetime.now(_dt.UTC))


def seconds_since(stamp: str) -> float:
    """How long ago a timestamp the ledger wrote was, in seconds."""
    moment = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return (_dt.datetime.now(_dt.UTC) - moment).total_seconds()


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(text: str) -> str:
    """'24h', '7d', '30m' or an ISO date → the ISO timestamp that far back (UTC)."""
    m = _DURATION.fullmatch(text.strip())
    if m:
        try:
            delta = _dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
            return _iso(_dt.datetime.now(_dt.UTC) - delta)
        except (OverflowError, ValueError):
            raise BadDuration(f"--since: {text!r} reaches back before year 1") from None
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadDuration(f"--since: {text!r} is not a duration like 24h/7d or an ISO date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return _iso(moment)
