"""The SQLite ledger: open (create from schema.sql, or migrate: see migrations.py), transactions, and
the job queries.

Writers use ``BEGIN IMMEDIATE`` so that two processes never both read-then-write the same
job; WAL mode lets readers (``status``, ``sql``) proceed while a writer works.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import migrations, staging, states
from .errors import JobledgerError
from .jobrows import StoredSpec
from .manifest import ExpectedOutput
from .timeutil import utcnow

SCHEMA_VERSION = migrations.schema_version()
BUSY_TIMEOUT_MS = 30_000


class LedgerError(JobledgerError):
    """A problem the user can fix; the CLI prints it as one line."""


class UnknownJob(LedgerError):
    def __init__(self, job_id: str):
        super().__init__(f"unknown job id {job_id!r}")
        self.job_id = job_id


class SpecNeeded(LedgerError):
    """A job known only from ModelOps's state.json lacks what only its spec tells (its expected outputs, or
    the tasks that write them): the message says how to give it one."""

    def __init__(self, job_id: str, what: str, to: str):
        super().__init__(f"{job_id}: {what} (ModelOps created it without a spec): register its spec with "
                         f"`jobledger register SPEC --job-id {job_id}` to {to} it")
        self.job_id = job_id


def default_path() -> Path:
    env = os.environ.get("JOBLEDGER_DB")
    if env:
        return Path(os.path.expanduser(env))
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "jobledger" / "ledger.db"


class Ledger:
    """One SQLite ledger file. ``mirror`` (optional) is asked to accept every status change
    before it is committed locally (see jobledger.registry)."""

    def __init__(self, path: str | os.PathLike | None = None, *, readonly: bool = False, mirror=None):
        self.path = Path(os.path.expanduser(path)) if path else default_path()
        self.readonly = readonly
        self.mirror = mirror
        if self.path.is_dir():
            raise LedgerError(f"{self.path} is a directory, not a ledger file")
        try:
            if readonly:
                if not self.path.exists():
                    raise LedgerError(f"no ledger at {self.path}")
                # quote(): a '?' or '#' in the path must not end the file name inside the URI
                self.conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True,
                                            isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                                            check_same_thread=False)
                self.conn.execute("PRAGMA query_only = ON")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                                            check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise LedgerError(f"cannot open the ledger {self.path}: {reason}") from None
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self._set_wal()
            self._check_version()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise LedgerError(f"{self.path} is not a usable jobledger ledger: {exc}") from None

    # ------------------------------------------------------------ lifecycle

    def _set_wal(self) -> None:
        for _ in range(50):
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self.conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: large manifests stay in cache
                return
            except sqlite3.OperationalError as exc:  # another process is creating the file
                if "locked" not in str(exc):
                    raise
                import time
                time.sleep(0.05)

    def _check_version(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(f"ledger {self.path} has schema version {version}, newer than this jobledger "
                              f"understands ({SCHEMA_VERSION}); upgrade jobledger")
        if version < SCHEMA_VERSION:
            if not self.readonly:
                self._migrate()
            elif os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
                Ledger(self.path).close()  # upgrade once through a writable connection, then read
            else:
                raise LedgerError(f"ledger {self.path} has schema version {version}; open it once with write "
                                  f"access to upgrade it")

    def _migrate(self) -> None:
        """Create the ledger from schema.sql, or apply the pending migrations, in one transaction."""
        self.conn.execute("PRAGMA foreign_keys = OFF")  # cannot change inside a transaction; see migrate()
        try:
            with self.transaction():
                if self.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                    return  # another process upgraded it while we waited for the lock
                migrations.migrate(self.conn, migrations.schema_statements())
        except migrations.MigrationError as exc:
            raise LedgerError(f"{self.path} cannot be upgraded: {exc}") from None
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One writer transaction (BEGIN IMMEDIATE); rolls back on any exception."""
        return self._within("BEGIN IMMEDIATE")

    def snapshot(self) -> AbstractContextManager[sqlite3.Connection]:
        """Reads that see one committed state of the ledger: a read transaction (in WAL mode writers go
        on meanwhile). Without it each statement sees the latest commit, so a job row and its history read
        one after the other can come from different moments."""
        return self._within("BEGIN")

    @contextmanager
    def _within(self, begin: str) -> Iterator[sqlite3.Connection]:
        """A transaction started by ``begin``, or the one already open (it then decides the outcome)."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute(begin)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------ reads

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict]:
        return [dict(r) for r in self.conn.execute(sql, params)]

    def job(self, job_id: str) -> dict:
        row = self.conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        return dict(row)

    def job_exists(self, job_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is not None

    def unfinished_job_ids(self) -> list[str]:
        """Jobs a runtime may still move (scheduled, running, validating), oldest first."""
        return [r[0] for r in self.conn.execute(
            "SELECT job_id FROM jobs WHERE status IN ('scheduled', 'running', 'validating') "
            "ORDER BY created_at, job_id")]

    def job_ids(self, prefix: str = "", limit: int = 500) -> list[str]:
        """Job ids starting with ``prefix``, in order (for shell completion)."""
        return [r[0] for r in self.conn.execute(
            "SELECT job_id FROM jobs WHERE substr(job_id, 1, ?) = ? ORDER BY job_id LIMIT ?",
            (len(prefix), prefix, limit))]

    def spec_of(self, job_id: str) -> Any:
        self.job(job_id)
        row = self.conn.execute("SELECT spec_gz FROM job_specs WHERE job_id = ?", (job_id,)).fetchone()
        return spec_document(row[0] if row else None, job_id)

    def summary(self, job_id: str) -> dict:
        """Output counts of one job, from the ``job_summary`` view."""
        row = self.conn.execute("SELECT expected, verified, missing, errored, incomplete, stale "
                                "FROM job_summary WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        return dict(row)

    def transitions(self, job_id: str) -> list[dict]:
        self.job(job_id)
        return self.query("SELECT from_status, to_status, at, reason FROM transitions WHERE job_id = ? "
                          "ORDER BY transition_id", (job_id,))

    def list_jobs(self, status: str | None = None, since: str | None = None,
                  limit: int | None = None) -> list[dict]:
        where, args = [], []
        if status:
            where.append("j.status = ?")
            args.append(status)
        if since:
            where.append("j.updated_at >= ?")
            args.append(since)
        sql = ("SELECT j.job_id, j.status, j.runtime, j.parent_job_id, s.expected, s.verified, s.missing, "
               "s.errored, s.incomplete, j.updated_at FROM jobs j JOIN job_summary s USING (job_id)")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY j.created_at DESC, j.job_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, args)

    UNVERIFIED_COLUMNS = ("path", "reason", "param_id", "seed", "task_id", "detail")

    def unverified_rows(self, job_id: str, reason: str | None = None,
                        limit: int | None = None) -> Iterator[tuple]:
        """Not-verified outputs of one job in registration order, from the ``unverified_outputs`` view,
        as tuples (UNVERIFIED_COLUMNS) read as they are iterated.

        One pass over the job's manifest rows in output_id order (its index gives that order, so nothing
        is sorted and the first row comes at once); each row's state is a primary-key probe into
        output_states. (Reading each reason by itself and merging cost one full pass per reason before
        the first row: 0.48 s at 1,000,000 outputs.)"""
        self.job(job_id)
        where = "job_id = ?" + (" AND reason = ?" if reason else "")
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row for a million rows
        rows = cursor.execute(f"SELECT {', '.join(self.UNVERIFIED_COLUMNS)} FROM unverified_outputs "
                              f"WHERE {where} ORDER BY output_id", (job_id, reason) if reason else (job_id,))
        return itertools.islice(rows, limit) if limit else rows

    def unverified(self, job_id: str, reason: str | None = None, limit: int | None = None) -> list[dict]:
        return [dict(zip(self.UNVERIFIED_COLUMNS, row, strict=True))
                for row in self.unverified_rows(job_id, reason, limit)]

    # ------------------------------------------------------------ writes

    def insert_job(self, columns: dict, reason: str) -> int:
        """Insert a new job (``columns``: see job_columns) with the expected outputs staged on this connection
        (see staging), and its first status. Call inside transaction(). Returns the number of outputs."""
        self._insert_job_row(columns)
        count = staging.copy(self.conn, columns["job_id"])
        self.conn.execute("UPDATE jobs SET expected_total = ? WHERE job_id = ?", (count, columns["job_id"]))
        self._record_moves(columns["job_id"], [[None, columns["status"], columns["created_at"], reason]])
        return count

    def import_job(self, columns: dict, spec_doc: Any, params: Mapping[str, str],
                   outputs: Iterable[ExpectedOutput], history: list[list]) -> int:
        """Insert a job another machine (or ModelOps) created, exactly as the registry holds it: its columns,
        spec, expected outputs and status history (see import_history). Call inside transaction()."""
        spec_gz = StoredSpec.of(spec_doc).gz if spec_doc is not None else None
        self._insert_job_row({**columns, "spec_gz": spec_gz})
        count = self.insert_outputs(columns["job_id"], outputs, params)
        self.import_history(columns["job_id"], history, {c: columns[c] for c in ("status", "updated_at")})
        return count

    def adopt_spec(self, job_id: str, columns: dict) -> int:
        """Give a job known only from ModelOps's state.json its spec: the expected outputs staged on this
        connection replace the result paths ModelOps reported, ``columns`` (see adoption_columns) are set;
        status, history and created_at stay. Call inside transaction(). Returns the number of outputs."""
        self.job(job_id)
        self.conn.execute("DELETE FROM manifest WHERE job_id = ?", (job_id,))
        count = staging.copy(self.conn, job_id)
        columns = {**columns, "expected_total": count}
        spec_gz = columns.pop("spec_gz")
        self.conn.execute(f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in columns)} WHERE job_id = ?",
                          (*columns.values(), job_id))
        self._store_spec(job_id, spec_gz)
        return count

    def set_reported_outputs(self, job_id: str, verified: list[str], unverified: list[str]) -> None:
        """For a job without a spec: its expected outputs are the result paths ModelOps's last validation
        listed (verified or missing); param ids, task ids and entrypoints are unknown.
        Call inside transaction()."""
        if self.job(job_id)["spec_format"] is not None:
            raise ValueError(f"{job_id} has a spec: its expected outputs come from the manifest")
        self.conn.execute("DELETE FROM manifest WHERE job_id = ?", (job_id,))
        rows = [ExpectedOutput("aggregation" if "/aggs/" in path else "simulation", "", "", "", "", None,
                               None, _seed_in(path), path) for path in verified + unverified]
        self.insert_outputs(job_id, rows, {"": "null"})
        reported = {**dict.fromkeys(unverified, "missing"), **dict.fromkeys(verified, "verified")}
        self.conn.executemany("INSERT INTO output_states (output_id, state) "
                              "SELECT output_id, ? FROM manifest WHERE job_id = ? AND path = ?",
                              ((state, job_id, path) for path, state in reported.items()))

    def _insert_job_row(self, columns: dict) -> None:
        """The jobs row, and the spec (``spec_gz``, when there is one) in job_specs."""
        columns = dict(columns)
        spec_gz = columns.pop("spec_gz", None)
        _check_columns(columns)
        self.conn.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                          tuple(columns.values()))
        if spec_gz is not None:
            self._store_spec(columns["job_id"], spec_gz)

    def _store_spec(self, job_id: str, spec_gz: bytes) -> None:
        self.conn.execute("INSERT INTO job_specs (job_id, spec_gz) VALUES (?, ?) "
                          "ON CONFLICT (job_id) DO UPDATE SET spec_gz = excluded.spec_gz", (job_id, spec_gz))

    def insert_outputs(self, job_id: str, rows: Iterable[ExpectedOutput], params: Mapping[str, str]) -> int:
        """Insert expected outputs; ``params`` maps each param_id to its canonical params JSON.
        Call inside transaction()."""
        try:
            staging.stage(self.conn, rows, params)
            return staging.copy(self.conn, job_id)
        finally:
            staging.drop(self.conn)

    def transition(self, job_id: str, to_status: str, reason: str, *, revalidate: bool = False,
                   resubmit: bool = False, with_writes: Callable[[], None] | None = None,
                   progress: Any = None, **fields: Any) -> dict:
        """Move a job to ``to_status`` (checked against the state machine) and record why.

        ``revalidate`` and ``resubmit`` allow the explicit moves of states.check_transition. Extra
        ``fields`` are job columns updated with the move; ``with_writes`` runs further writes in
        the same local transaction (``progress`` tells the registry what they will record). When a
        mirror is set, the move is first compare-and-swapped into the registry with no local lock held
        (a network round trip), then written here in one short transaction; if the registry refuses or
        fails, nothing is written. Returns the updated job row.
        """
        if self.mirror is None:
            with self.transaction():
                job = self.job(job_id)
                states.check_transition(job["status"], to_status, revalidate=revalidate, resubmit=resubmit)
                now = utcnow()
                self._write_status(job_id, [[job["status"], to_status, now, reason]],
                                   {**fields, "status": to_status, "updated_at": now})
                if with_writes is not None:
                    with_writes()
            return self.job(job_id)
        if self.conn.in_transaction:
            raise RuntimeError("with a registry, Ledger.transition must not run inside a transaction: "
                               "the registry swap would hold the write lock over a network round trip")
        job = self.job(job_id)
        states.check_transition(job["status"], to_status, revalidate=revalidate, resubmit=resubmit)
        swapped = self.mirror.swap_transition(self, job, to_status, reason, fields, revalidate=revalidate,
                                              resubmit=resubmit, progress=progress)
        with self.transaction():
            self.import_history(job_id, swapped.history, swapped.columns)
            if with_writes is not None:
                with_writes()
        return self.job(job_id)

    def import_history(self, job_id: str, history: list[list], columns: dict) -> None:
        """The one unchecked way a status changes: history another machine (or ModelOps) already made.

        ``history`` is the job's whole status history as the registry holds it (entries ``[from, to,
        at, reason, ...]``); this ledger's own rows must be its first entries (the same moves), and
        only the entries beyond them are added. ``columns`` (status, updated_at, runtime coordinates,
        validation fields …) are set as given; the status defaults to the last entry's. The state
        machine is not consulted: the moves were made, possibly by a writer with other rules.
        Call inside transaction().
        """
        have = [(r[0], r[1]) for r in self.conn.execute(
            "SELECT from_status, to_status FROM transitions WHERE job_id = ? ORDER BY transition_id",
            (job_id,))]
        if [(e[0], e[1]) for e in history[:len(have)]] != have:
            raise LedgerError(f"job {job_id}: this ledger's history is not a beginning of the one being "
                              f"imported (it changed meanwhile); run `jobledger pull {job_id}`")
        new = history[len(have):]
        values = dict(columns)
        if new:
            values.setdefault("status", new[-1][1])
            values.setdefault("updated_at", new[-1][2])
        self._write_status(job_id, new, values)

    def _write_status(self, job_id: str, moves: list[list], columns: dict) -> None:
        if columns:
            _check_columns(columns)
            self.conn.execute(f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in columns)} WHERE job_id = ?",
                              (*columns.values(), job_id))
        self._record_moves(job_id, moves)

    def _record_moves(self, job_id: str, moves: list[list]) -> None:
        """The one INSERT into transitions (reached from insert_job, transition and import_history)."""
        self.conn.executemany("INSERT INTO transitions (job_id, from_status, to_status, at, reason) "
                              "VALUES (?,?,?,?,?)", ((job_id, *move[:4]) for move in moves))

    def notify_changed(self, job_id: str) -> None:
        """After a command committed changes to a job, let the mirror publish them."""
        if self.mirror is not None:
            self.mirror.publish(self, job_id)

    def delete_jobs(self, job_ids: Sequence[str]) -> None:
        """Delete jobs (children before their parents) and everything recorded about them: outputs,
        history, validation runs, events, unexpected paths (ON DELETE CASCADE). Parameter sets and task
        templates are shared between jobs and stay. One transaction; no mirror is told."""
        with self.transaction():
            for job_id in job_ids:
                self.conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Update non-status columns of a job (runtime handles, error fields)."""
        if not fields:
            return
        if "status" in fields:
            raise ValueError("update_job cannot change the status; use transition")
        _check_columns(fields)
        with self.transaction():
            self.job(job_id)
            self.conn.execute(f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in fields)}, updated_at = ? "
                              f"WHERE job_id = ?", (*fields.values(), utcnow(), job_id))


def _check_columns(columns: Mapping[str, Any]) -> None:
    for name in columns:
        if not re.fullmatch(r"[a-z_0-9]+", name):
            raise ValueError(f"bad column name {name!r}")


def _seed_in(path: str) -> int | None:
    match = re.search(r"/seed_(\d+)$", path)
    return int(match.group(1)) if match else None


def spec_document(spec_gz: bytes | None, job_id: str) -> Any:
    """The spec a job row keeps (``spec_gz``), None for a job without one."""
    if spec_gz is None:
        return None
    try:
        return json.loads(gzip.decompress(spec_gz))
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # damaged by hand or by a disk
        raise LedgerError(f"job {job_id}: the stored spec (job_specs.spec_gz) is damaged: {exc}") from None
