"""Ad-hoc read-only SQL (``jobledger sql``): bounded in time, interruptible, streamed, and unable to
write anything anywhere.

The ledger is opened read-only (``mode=ro`` and ``query_only``), and an authorizer denies what a
read-only connection would still allow: ATTACH (which creates a file; ``VACUUM INTO`` attaches its
target, so it is denied too) and every PRAGMA that sets a value or is not on the read list. A
progress handler, called every few thousand virtual-machine steps, stops the query when the time
limit passes or Ctrl-C was pressed (a SIGINT handler only sets a flag: Python cannot raise inside
SQLite's C loop). Rows are fetched in batches as the caller iterates, never collected.
"""
from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from .ledger import Ledger, LedgerError

DEFAULT_TIMEOUT = 60.0
BATCH = 1000
PROGRESS_STEPS = 10_000
# PRAGMAs that only read. The first group takes no value; the second takes the name of a table or index.
READ_PRAGMAS = {"application_id", "auto_vacuum", "busy_timeout", "cache_size", "collation_list",
                "compile_options", "data_version", "database_list", "encoding", "foreign_keys",
                "freelist_count",
                "function_list", "journal_mode", "module_list", "page_count", "page_size", "pragma_list",
                "query_only", "schema_version", "synchronous", "table_list", "user_version"}
READ_PRAGMAS_ON = {"foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
                   "integrity_check", "quick_check", "table_info", "table_xinfo", "table_list"}


class QueryDenied(LedgerError):
    """The query would write, attach a file or change a setting."""


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None,
                _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if arg2 is None and name in READ_PRAGMAS or name in READ_PRAGMAS_ON:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _Guard:
    """Time limit and Ctrl-C for one query, through SQLite's progress handler."""

    def __init__(self, conn: sqlite3.Connection, timeout: float | None):
        self.conn = conn
        self.deadline = time.monotonic() + timeout if timeout else None
        self.interrupted = False
        self.timed_out = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None  # SIGINT's handler before

    def __enter__(self) -> _Guard:
        self.conn.set_progress_handler(self._check, PROGRESS_STEPS)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        self.conn.set_progress_handler(None, 0)
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, _signum, _frame) -> None:
        self.interrupted = True

    def _check(self) -> int:
        if self.interrupted:
            return 1
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0

    def error(self, exc: sqlite3.Error, timeout: float | None) -> BaseException:
        if self.interrupted:
            return KeyboardInterrupt()
        if self.timed_out:
            return LedgerError(f"sql: stopped after the {timeout:g} s time limit (--timeout)")
        if "not authorized" in str(exc):
            return QueryDenied("sql: the ledger is read-only here: ATTACH, VACUUM and PRAGMAs that change "
                               "settings are refused")
        return LedgerError(f"sql: {exc}")


def run_query(ledger_path: str | Path | None, query: str, *,
              timeout: float | None = DEFAULT_TIMEOUT) -> tuple[tuple[str, ...], Iterator[tuple]]:
    """(column names, rows) of ``query`` on a read-only, guarded connection; rows are produced as they
    are iterated and the connection is closed when the iteration ends (or the iterator is dropped)."""
    ledger = Ledger(ledger_path, readonly=True)
    conn = ledger.conn
    conn.row_factory = None
    conn.set_authorizer(_authorizer)
    guard = _Guard(conn, timeout)
    try:
        with guard:
            cursor = conn.execute(query)
            columns = tuple(d[0] for d in cursor.description or ())
            first = cursor.fetchmany(BATCH)
    except sqlite3.Error as exc:
        ledger.close()
        raise guard.error(exc, timeout) from None
    except BaseException:
        ledger.close()
        raise

    def rows() -> Iterator[tuple]:
        try:
            batch = first
            while batch:
                yield from batch
                with guard:
                    batch = cursor.fetchmany(BATCH)
        except sqlite3.Error as exc:
            raise guard.error(exc, timeout) from None
        finally:
            ledger.close()

    return columns, rows()


__all__ = ["run_query", "QueryDenied", "DEFAULT_TIMEOUT"]
