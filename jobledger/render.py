"""Printing plain rows: tables (tabulate), JSON, CSV. Knows nothing of the domain."""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    return tabulate([[r.get(c) for c in columns] for r in rows], headers=columns, tablefmt="simple",
                    disable_numparse=True, missingval="")


def to_csv(rows: Iterable[dict], columns: Sequence[str] | None = None) -> str:
    rows = list(rows)
    buffer = io.StringIO()
    columns = list(columns or (rows[0].keys() if rows else []))
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([r.get(c) for c in columns])
    return buffer.getvalue()


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    return tabulate([[k, "" if v is None else v] for k, v in pairs], tablefmt="plain", disable_numparse=True)


class Progress:
    """A progress line on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None = None, stream=None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            if self.total:
                width = 30
                filled = int(width * min(self.done, self.total) / self.total)
                bar = "#" * filled + "-" * (width - filled)
                self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            else:
                self.stream.write(f"\r{self.label} {self.done}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
