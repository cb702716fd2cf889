"""What a completion report shows, read from the ledger alone (its tables and views), as dataclasses.

Nothing here touches a store or a runtime: a ledger that was only ``pull``ed gives the same report.
"""
from __future__ import annotations

import base64
import csv
import gzip
import io
from dataclasses import dataclass, field

from ..ledger import Ledger
from ..timeutil import utcnow
from . import charts
from .completion_map import KNOWN_STATES, CompletionMap, build_map
from .queries import MISSING_OUTPUTS, VANISHED_OUTPUTS

LIST_LIMIT = 1_000
_UNEXPECTED_SQL = "SELECT path, run_id FROM unexpected_paths WHERE job_id = :job_id ORDER BY path"
CSV_COLUMNS = ("path", "reason", "param_id", "seed", "task_id", "detail")


@dataclass
class TreeNode:
    job_id: str
    status: str
    depth: int
    expected: int
    verified: int
    not_verified: int
    overcompute: int | None        # None for the root
    current: bool
    children: list[TreeNode] = field(default_factory=list)


@dataclass
class Listing:
    """The first LIST_LIMIT rows of a list, and how many there are in all."""
    rows: list[dict]
    total: int


@dataclass
class JobReport:
    job: dict
    expected: int
    pct_verified: float | None
    last_validation: dict | None
    cmap: CompletionMap
    param_charts: list[charts.BarChart]
    constant_params: dict[str, str]
    tree: TreeNode | None
    runs: list[dict]
    timeline: charts.LineChart | None
    vanished: Listing
    unexpected: Listing
    not_verified: Listing
    csv_gz_base64: str
    generated_at: str

    @property
    def tree_size(self) -> int:
        def size(node: TreeNode) -> int:
            return 1 + sum(size(c) for c in node.children)
        return size(self.tree) if self.tree else 0


@dataclass
class LedgerJob:
    job_id: str
    status: str
    parent_job_id: str | None
    updated_at: str
    expected: int
    state_counts: dict[str, int]
    pct_verified: float | None
    validations: int
    sparkline: str
    report_file: str | None = None


@dataclass
class LedgerReport:
    path: str
    jobs: list[LedgerJob]
    states: list[str]
    generated_at: str


def job_report(ledger: Ledger, job_id: str) -> JobReport:
    job = ledger.job(job_id)
    conn = ledger.conn
    cmap = build_map(conn, job_id)
    # The map counted every output: job_summary's figures without another pass over them (pct_verified
    # by job_summary's own expression, so both round alike).
    expected = sum(cmap.state_counts.values())
    (pct_verified,) = conn.execute("SELECT round(100.0 * ? / nullif(?, 0), 1)",
                                   (cmap.state_counts.get("verified", 0), expected)).fetchone()
    runs = ledger.query("SELECT run_id, started_at, finished_at, strategy, requests, expected, verified, "
                        "missing, errored, incomplete, unexpected, outcome, error FROM validation_runs "
                        "WHERE job_id = ? ORDER BY run_id", (job_id,))
    not_verified, csv_blob = _not_verified(conn, job_id)
    param_charts, constants = charts.parameter_view(cmap)
    return JobReport(
        job=job, expected=expected, pct_verified=pct_verified,
        last_validation=_with_duration(runs[-1]) if runs else None, cmap=cmap,
        param_charts=param_charts, constant_params=constants, tree=resume_tree(ledger, job_id), runs=runs,
        timeline=charts.timeline(runs), vanished=_listing(conn, VANISHED_OUTPUTS, {"job_id": job_id}),
        unexpected=_listing(conn, _UNEXPECTED_SQL, {"job_id": job_id}),
        not_verified=not_verified, csv_gz_base64=csv_blob, generated_at=utcnow())


def _with_duration(run: dict) -> dict:
    seconds = None
    start, end = charts.seconds_of(run["started_at"]), charts.seconds_of(run["finished_at"])
    if start is not None and end is not None:
        seconds = round(end - start, 2)
    return {**run, "seconds": seconds}


def _listing(conn, sql: str, args: dict) -> Listing:
    cursor = conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchmany(LIST_LIMIT)]
    total = len(rows)
    while batch := cursor.fetchmany(10_000):
        total += len(batch)
    return Listing(rows, total)


def _not_verified(conn, job_id: str) -> tuple[Listing, str]:
    """The first LIST_LIMIT not-verified outputs, and all of them as gzipped CSV in base64."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    shown: list[dict] = []
    total = 0
    cursor = conn.execute(MISSING_OUTPUTS, {"job_id": job_id})
    while batch := cursor.fetchmany(10_000):
        writer.writerows(tuple(r) for r in batch)
        if len(shown) < LIST_LIMIT:
            shown.extend(dict(zip(CSV_COLUMNS, r, strict=True)) for r in batch[:LIST_LIMIT - len(shown)])
        total += len(batch)
    blob = gzip.compress(text.getvalue().encode("utf-8"), compresslevel=9, mtime=0)
    return Listing(shown, total), base64.b64encode(blob).decode("ascii")


# ------------------------------------------------------------------ resume tree

_TREE_SQL = """
SELECT l.job_id, l.parent_job_id, l.depth, l.status, s.expected, s.verified, j.created_at
FROM job_lineage l JOIN job_summary s ON s.job_id = l.job_id JOIN jobs j ON j.job_id = l.job_id
WHERE l.root_job_id = (SELECT root_job_id FROM job_lineage WHERE job_id = :job_id)
ORDER BY l.depth, l.job_id
"""
# Outputs a child was given that its parent had already verified before the child was created.
_OVERCOMPUTE_SQL = """
SELECT count(*) FROM outputs po JOIN validation_runs r ON r.run_id = po.first_verified_run
WHERE po.job_id = :parent AND r.started_at < :created
  AND po.path IN (SELECT path FROM manifest WHERE job_id = :child)
"""


def resume_tree(ledger: Ledger, job_id: str) -> TreeNode | None:
    """The resume tree that holds ``job_id`` (from its root), or None for a job never resumed."""
    job = ledger.job(job_id)
    if job["parent_job_id"] is None and ledger.conn.execute(
            "SELECT 1 FROM jobs WHERE parent_job_id = ? LIMIT 1", (job_id,)).fetchone() is None:
        return None  # neither resumed nor a resume child (and no pass over its outputs to find out)
    rows = ledger.query(_TREE_SQL, {"job_id": job_id})
    if len(rows) <= 1:
        return None
    nodes: dict[str, TreeNode] = {}
    root = None
    for r in rows:
        over = None
        if r["parent_job_id"] is not None:
            args = {"parent": r["parent_job_id"], "created": r["created_at"], "child": r["job_id"]}
            over = ledger.conn.execute(_OVERCOMPUTE_SQL, args).fetchone()[0]
        node = TreeNode(r["job_id"], r["status"], r["depth"], r["expected"], r["verified"],
                        r["expected"] - r["verified"], over, r["job_id"] == job_id)
        nodes[node.job_id] = node
        if r["parent_job_id"] in nodes:
            nodes[r["parent_job_id"]].children.append(node)
        elif root is None:
            root = node
    return root


# ------------------------------------------------------------------ the ledger page

def ledger_report(ledger: Ledger) -> LedgerReport:
    conn = ledger.conn
    counts: dict[str, dict[str, int]] = {}
    for job_id, state, n in conn.execute("SELECT job_id, state, count(*) FROM expected_outputs "
                                         "GROUP BY job_id, state"):
        counts.setdefault(job_id, {})[state] = n
    runs: dict[str, list[int]] = {}
    for job_id, verified in conn.execute("SELECT job_id, verified FROM validation_runs "
                                         "ORDER BY job_id, run_id"):
        runs.setdefault(job_id, []).append(verified)
    jobs = []
    for r in ledger.query("SELECT s.job_id, s.status, s.parent_job_id, s.updated_at, s.expected, "
                          "s.pct_verified FROM job_summary s JOIN jobs j ON j.job_id = s.job_id "
                          "ORDER BY j.created_at DESC, s.job_id"):
        history = runs.get(r["job_id"], [])
        jobs.append(LedgerJob(r["job_id"], r["status"], r["parent_job_id"], r["updated_at"], r["expected"],
                              counts.get(r["job_id"], {}), r["pct_verified"], len(history),
                              charts.sparkline(history, r["expected"])))
    extra = sorted({s for c in counts.values() for s in c} - set(KNOWN_STATES))
    return LedgerReport(str(ledger.path), jobs, [*KNOWN_STATES, *extra], utcnow())
