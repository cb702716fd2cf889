"""Printing rows and documents: one set of output options for every command that prints rows
(like sqlite-utils' ``output_options``), rows streamed as they come, progress bars and colour.
Knows nothing of the domain.

Formats: ``table`` (the default; ``--fmt`` picks a tabulate style), ``json`` (an array),
``nl`` (one JSON object per line), ``csv``, ``tsv``. BLOBs print as sqlite-utils prints them:
``{"$base64": true, "encoded": ...}`` in JSON, their base64 text in CSV/TSV, a size note in tables.
"""
from __future__ import annotations

import base64
import csv
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

import click

from .errors import JobledgerError

FORMATS = ("table", "json", "nl", "csv", "tsv")
# The default table is written by streaming: column widths come from the first rows, later rows
# are padded to them (a longer cell just runs over), so a million rows start printing at once.
WIDTH_SAMPLE = 1000
# tabulate styles for --fmt (tabulate itself is imported only when one is asked for)
TABLE_STYLES = ("simple", "plain", "github", "grid", "simple_grid", "rounded_grid", "pipe", "orgtbl", "rst",
                "psql", "presto", "pretty", "fancy_grid", "heavy_grid", "mixed_grid", "double_grid",
                "outline", "simple_outline", "rounded_outline", "jira", "html", "latex", "mediawiki",
                "moinmoin", "textile", "tsv", "youtrack", "unsafehtml", "asciidoc")
# tabulate needs every row before it prints one: a --fmt style other than "simple" prints at most this
# many rows, and more are one error line, not a MemoryError after minutes.
MAX_STYLED_ROWS = 100_000
STATUS_COLOURS = {"succeeded": "green", "partial": "yellow", "failed": "red", "cancelled": "magenta",
                  "running": "cyan", "validating": "cyan", "scheduled": "blue", "submitting": "blue",
                  "pending": "blue"}


# ------------------------------------------------------------------ the options

def output_options(fn: Callable | None = None, *, document: str | None = None) -> Callable:
    """Add --table/--json/--nl/--csv/--tsv and --fmt; the command receives ``output`` (None when
    no option was given) and ``table_style``. ``document``: what --json prints instead of rows
    (for commands whose JSON is one object, e.g. ``status``)."""
    json_help = f"Print {document} as JSON." if document else "Print the rows as a JSON array."

    def decorate(f: Callable) -> Callable:
        def flag(name: str, value: str, text: str) -> Callable:
            return click.option(name, "output", flag_value=value, help=text, show_default=True,
                                show_envvar=True)

        options = [
            flag("--table", "table", "Print a table (the default)."),
            flag("--json", "json", json_help),
            flag("--nl", "nl", "Print one JSON object per line."),
            flag("--csv", "csv", "Print CSV with a header row."),
            flag("--tsv", "tsv", "Print tab-separated values with a header row."),
            click.option("--fmt", "table_style", type=click.Choice(TABLE_STYLES), metavar="STYLE",
                         show_default=True, show_envvar=True,
                         help=f"Table style (implies --table): {', '.join(TABLE_STYLES[:8])}, ...; "
                              f"styles other than simple print at most {MAX_STYLED_ROWS:,} rows."),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate(fn) if fn is not None else decorate


def chosen(output: str | None, table_style: str | None, default: str = "table") -> str:
    """The format asked for: --fmt means a table; nothing asked means ``default``."""
    if table_style and output in (None, "table"):
        return "table"
    return output or default


# ------------------------------------------------------------------ values

def json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=json_value)


def cell(value: Any) -> str:
    """A value as a table cell."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return f"<binary: {len(value):,} bytes>"
    return str(value)


def flat_cell(value: Any) -> Any:
    """A value as a CSV/TSV field."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


# ------------------------------------------------------------------ rows

def output_rows(rows: Iterable[Sequence | dict], columns: Sequence[str], fmt: str, *,
                table_style: str | None = None,
                out: TextIO | None = None, colour: Callable[[str, str], str] | None = None,
                empty: str = "(no rows)") -> int:
    """Write ``rows`` (tuples in ``columns`` order, or dicts) in ``fmt`` as they come; returns how
    many were written. ``colour(column, text)`` may decorate table cells (after padding)."""
    out = out or sys.stdout
    columns = list(columns)
    tuples = (tuple(r.get(c) for c in columns) if isinstance(r, dict) else tuple(r) for r in rows)
    if fmt == "json":
        return _write_json_array(tuples, columns, out)
    if fmt == "nl":
        n = 0
        for row in tuples:
            out.write(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False,
                                 default=json_value) + "\n")
            n += 1
        return n
    if fmt in ("csv", "tsv"):
        writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        n = 0
        for row in tuples:
            writer.writerow([flat_cell(v) for v in row])
            n += 1
        return n
    if table_style and table_style != "simple":
        from tabulate import tabulate  # whole-table styles need every row first
        data = [[cell(v) for v in row] for row in itertools.islice(tuples, MAX_STYLED_ROWS + 1)]
        if len(data) > MAX_STYLED_ROWS:
            raise JobledgerError(f"--fmt {table_style}: more than {MAX_STYLED_ROWS:,} rows; use the default "
                                 f"table (streamed) or --csv/--nl")
        out.write((tabulate(data, headers=columns, tablefmt=table_style, disable_numparse=True)
                   if data else empty) + "\n")
        return len(data)
    return _write_table(tuples, columns, out, colour, empty)


def _write_json_array(rows: Iterator[tuple], columns: list[str], out: TextIO) -> int:
    """The same text as ``to_json(list_of_dicts)``, written one row at a time."""
    n = 0
    for n, row in enumerate(rows, 1):
        text = to_json(dict(zip(columns, row, strict=True))).replace("\n", "\n  ")
        out.write(("[\n  " if n == 1 else ",\n  ") + text)
    out.write("\n]\n" if n else "[]\n")
    return n


def _write_table(rows: Iterator[tuple], columns: list[str], out: TextIO,
                 colour: Callable[[str, str], str] | None, empty: str) -> int:
    """tabulate's "simple" style (left-aligned, two-space gaps, header underlined, a header at least
    two wider than its name), with widths taken from the first WIDTH_SAMPLE rows."""
    head = [[cell(v) for v in row] for row in itertools.islice(rows, WIDTH_SAMPLE)]
    if not head:
        out.write(empty + "\n")
        return 0
    widths = [max(len(name) + 2, *(len(r[i]) for r in head)) for i, name in enumerate(columns)]
    out.write("  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")

    def line(cells: list[str]) -> str:
        padded = [text.ljust(w) for text, w in zip(cells, widths, strict=True)]
        if colour is not None:
            padded = [colour(name, text) for name, text in zip(columns, padded, strict=True)]
        return "  ".join(padded).rstrip() + "\n"

    for cells in head:
        out.write(line(cells))
    n = len(head)
    for row in rows:
        out.write(line([cell(v) for v in row]))
        n += 1
    return n


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    """``name  value`` lines, names padded to the longest."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}".rstrip() for k, v in pairs)


# ------------------------------------------------------------------ terminals: colour, progress

def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def colour_enabled() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return is_terminal() and not os.environ.get("NO_COLOR")


def status_text(status: str, enabled: bool | None = None) -> str:
    """A status word, coloured on a terminal. ``status`` may carry padding (kept outside the colour)."""
    word = status.strip()
    if not (colour_enabled() if enabled is None else enabled) or word not in STATUS_COLOURS:
        return status
    return status.replace(word, click.style(word, fg=STATUS_COLOURS[word]), 1)


def status_columns(*names: str) -> Callable[[str, str], str] | None:
    """A table ``colour`` callback that colours the status columns ``names`` (None off a terminal)."""
    if not colour_enabled():
        return None
    return lambda column, text: status_text(text, True) if column in names else text


class Progress:
    """click's progress bar on stderr, only when stderr is a terminal. The bar appears once the
    total is known (``start(total)``, or given here); ``update(n)`` and ``start`` are plain
    callbacks domain code can be handed."""

    def __init__(self, label: str, total: int | None = None):
        self.label = label
        self.bar: Any = None
        if total is not None:
            self.start(total)

    def start(self, total: int) -> None:
        if self.bar is None and total and is_terminal(sys.stderr):
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self.bar.__enter__()

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    advance = update  # the name validation's observers call

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
