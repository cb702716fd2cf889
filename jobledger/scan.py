"""The ``scan`` strategy: observe a job's outputs in their own directories instead of reading every one.

Where outputs will be is known, so the result directories themselves need not be read: the walk of the
layout's prefixes stops at each parent directory that holds expected outputs (a param set's, or an
aggregation target's), whose one read shows which result directories are there, missing or
unexpected, and one or two probes of marker files per present one decide its state
(ProvenanceStore.scan_part, then layout.output_state). The directories above are read as the list
strategy reads them, so result directories nobody expected are found anywhere under the prefixes.
That is the work of the plainest checker (stat result.json and error_details.arrow per output, list
each param set) with fewer system calls, spread over worker processes: each takes some of the plan's
parts (shard prefixes), reads the job's outputs under them from the ledger itself and sends back
every output's state compactly (8 bytes), marking those whose state or detail differs from what
the ledger holds, with the counts per state and the unexpected directories. A repeat over an
unchanged store moves ~8 bytes per output between processes and has nothing to write.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from array import array
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from . import states
from .layout import (
    ERROR_FILE,
    ERRORED,
    INCOMPLETE,
    MISSING,
    OUTPUT_STATE_RULES,
    RESULT_FILE,
    VERIFIED,
    output_state,
)
from .stores import ProvenanceStore, open_store
from .stores.base import RESULT_DIR_FILES

PARALLEL_MIN_OUTPUTS = 20_000  # below this, starting worker processes costs more than it saves
STATES = (MISSING, VERIFIED, ERRORED, INCOMPLETE)  # a state's one-byte code is its index here
CODE = {state: code for code, state in enumerate(STATES)}
# The state of a packed output (``value``) in SQL.
PACKED_STATE_SQL = "CASE value & 7 " + " ".join(f"WHEN {c} THEN '{s}'" for s, c in CODE.items()) + " END"
_BY_MARKER = dict(OUTPUT_STATE_RULES)  # a marker found alone → its state (layout.output_state's rules)
# The state the ledger holds, packed with the output id: CODE + 1, or 7 for none (never observed) or another.
_OLD_CODE = {state: code + 1 for state, code in CODE.items()}
_OTHER = 7  # (0 is never used: an old code equal to a new CODE + 1 means unchanged)


def detail_of(state: str, names: list[str]) -> str | None:
    """Why an output is not simply verified or missing, worded as the listing strategies word it."""
    if state == ERRORED:
        return f"the worker wrote {ERROR_FILE}"
    if state == INCOMPLETE:
        return f"no {RESULT_FILE} ({len(names)} file{'' if len(names) == 1 else 's'} written)"
    return None


@dataclass
class Share:
    """One worker's observation: every output of its share, and which of them changed."""

    # Each output as one int, its id and state: output_id << 3 | CODE[state] (see PACKED_STATE_SQL).
    packed: array = field(default_factory=lambda: array("q"))
    changed: array = field(default_factory=lambda: array("q"))  # the same, of the outputs that changed
    details: dict[int, str] = field(default_factory=dict)  # output id → detail, when there is one
    counts: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    requests: int = 0


@dataclass
class Scan:
    shares: list[Share]
    workers: int

    @property
    def counts(self) -> dict:
        total: Counter = Counter()
        for share in self.shares:
            total.update(share.counts)
        return {**{state: total[state] for state in states.OUTPUT_STATES}, "expected": sum(total.values())}

    @property
    def unexpected(self) -> list[str]:
        return sorted(path for share in self.shares for path in share.unexpected)

    @property
    def requests(self) -> int:
        return sum(share.requests for share in self.shares)

    def packed_json(self, *, everything: bool = False) -> Iterator[str]:
        """The outputs that changed (all with ``everything``), packed, as JSON arrays: SQLite's
        json_each reads a million of them several times faster than binding a million rows."""
        for share in self.shares:
            yield json.dumps((share.packed if everything else share.changed).tolist())

    def details(self) -> Iterator[tuple[str, int]]:
        """(detail, output_id) of the outputs that have one."""
        for share in self.shares:
            for output_id, detail in share.details.items():
                yield detail, output_id


def scan(
    ledger_path: str,
    job_id: str,
    store: ProvenanceStore,
    parts: list[str],
    *,
    expected: int,
    workers: int | None = None,
) -> Scan:
    """Observe every expected output of ``job_id`` (``expected`` of them, each under one of ``parts``)
    in ``store``. The workers read the committed ledger at ``ledger_path``."""
    if workers is None:
        workers = (os.cpu_count() or 1) if expected >= PARALLEL_MIN_OUTPUTS else 1
    workers = max(1, min(workers, len(parts)))
    if workers == 1:
        shares = [_scan_share(ledger_path, job_id, store, parts, everything_is_mine=True)]
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [
                pool.submit(_scan_in_worker, ledger_path, job_id, store.url, parts[w::workers])
                for w in range(workers)
            ]
            shares = [future.result() for future in futures]
        store.count(sum(share.requests for share in shares))
    scanned = Scan(shares, workers)
    if scanned.counts["expected"] != expected:
        raise RuntimeError(
            f"scan of {job_id}: the parts {parts} cover {scanned.counts['expected']} of its "
            f"{expected} outputs"
        )
    return scanned


def _scan_in_worker(ledger_path: str, job_id: str, store_url: str, parts: list[str]) -> Share:
    return _scan_share(ledger_path, job_id, open_store(store_url), parts, everything_is_mine=False)


def _share_query(parts: list[str], everything_is_mine: bool) -> tuple[str, list]:
    """The job's outputs under ``parts`` (all of them when ``everything_is_mine``), with the state the
    ledger holds: one ``substr(path, 1, n) IN (...)`` per length of part."""
    sql = (
        "SELECT m.output_id, m.path, s.state, s.detail FROM manifest m "
        "LEFT JOIN output_states s ON s.output_id = m.output_id WHERE m.job_id = ?"
    )
    if everything_is_mine:
        return sql, []
    by_length: dict[int, list[str]] = {}
    for part in parts:
        by_length.setdefault(len(part), []).append(part)
    tests = [
        f"substr(m.path, 1, {n}) IN ({', '.join('?' * len(same))})" for n, same in sorted(by_length.items())
    ]
    return f"{sql} AND ({' OR '.join(tests)})", [p for _, same in sorted(by_length.items()) for p in same]


def _scan_share(
    ledger_path: str, job_id: str, store: ProvenanceStore, parts: list[str], *, everything_is_mine: bool
) -> Share:
    sql, args = _share_query(parts, everything_is_mine)
    # Per parent directory, each expected entry's output id and the state the ledger holds, packed in one
    # int (id << 3 | code): a million outputs in a few tens of MB. Details are rare: a dict of their own.
    parents: dict[str, dict[str, int]] = {}
    old_details: dict[int, str] = {}
    conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        for output_id, path, state, detail in conn.execute(sql, [job_id, *args]):
            parent, _, entry = path.rpartition("/")
            entries = parents.get(parent)
            if entries is None:
                entries = parents[parent] = {}
            entries[entry] = output_id << 3 | _OLD_CODE.get(state, _OTHER)
            if detail is not None:
                old_details[output_id] = detail
    finally:
        conn.close()
    before = store.requests
    share = Share()
    for part in parts:
        surveyed, others = store.scan_part(part, parents)
        for parent, found, unexpected in surveyed:
            share.unexpected.extend(f"{parent}/{entry}" for entry in unexpected)
            _classify(share, parents.pop(parent), found, old_details)
        share.unexpected.extend(
            directory for directory, names in others if RESULT_DIR_FILES.intersection(names)
        )
    for entries in parents.values():  # parent directories that are not there: every output missing
        _classify(share, entries, {}, old_details)
    share.requests = store.requests - before
    return share


def _classify(share: Share, entries: dict[str, int], found: dict, old_details: dict[int, str]) -> None:
    """Every expected entry of one parent directory: its state from what the survey found, counted,
    and marked changed when the state or detail differs from the ledger's."""
    packed_all, details, changed, counts = share.packed, share.details, share.changed, share.counts
    for entry, packed in entries.items():
        output_id, old_code = packed >> 3, packed & 7
        names = found.get(entry)
        if names is None:
            state, detail = MISSING, None
        else:
            # A lone marker decides at once (the common case); anything else goes by the rules.
            state = _BY_MARKER.get(names[0], INCOMPLETE) if len(names) == 1 else output_state(names)
            detail = None if state is VERIFIED else detail_of(state, names)
        counts[state] += 1
        if detail is not None:
            details[output_id] = detail
        code = CODE[state]
        packed = output_id << 3 | code
        packed_all.append(packed)
        if code + 1 != old_code or detail != old_details.get(output_id):
            changed.append(packed)
