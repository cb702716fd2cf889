"""The analyst's view: a self-contained HTML completion report of a job, or of the whole ledger.

Reads the ledger only. Jinja2 is imported when a report is written, not when jobledger starts.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import JobledgerError
from ..fileio import write_output
from ..ledger import Ledger
from .content import job_report, ledger_report

DEFAULT_LEDGER_REPORT = Path("jobledger-report") / "index.html"


class ReportError(JobledgerError):
    """A report that cannot be written where asked."""


@dataclass
class ReportWritten:
    path: str
    bytes: int
    seconds: float
    job_id: str | None = None
    cells: int = 0
    binned: bool = False
    jobs: int = 0          # ledger report: the per-job reports written beside it

    def as_dict(self) -> dict:
        return asdict(self)


def write_job_report(ledger: Ledger, job_id: str, output: str | Path | None = None, *,
                     link_jobs: bool = False) -> ReportWritten:
    """Write the report of ``job_id`` to ``output`` (default ``<job_id>.html`` here)."""
    from .html import render_job, report_file
    started = time.perf_counter()
    report = job_report(ledger, job_id)
    path = _output_path(output, Path(report_file(job_id)))
    size = _write(path, render_job(report, link_jobs=link_jobs))
    return ReportWritten(str(path), size, round(time.perf_counter() - started, 3), job_id,
                         report.cmap.cell_count, report.cmap.binned)


def write_ledger_report(ledger: Ledger, output: str | Path | None = None) -> ReportWritten:
    """Write one page over every job to ``output`` and each job's report beside it."""
    from .html import render_ledger, report_file
    started = time.perf_counter()
    path = _output_path(output, DEFAULT_LEDGER_REPORT)
    report = ledger_report(ledger)
    for job in report.jobs:
        job.report_file = report_file(job.job_id)
        if path.parent.joinpath(job.report_file) == path:
            raise ReportError(f"{path} would be overwritten by the report of job {job.job_id}; "
                              f"choose another name for the ledger page")
        write_job_report(ledger, job.job_id, path.parent / job.report_file, link_jobs=True)
    size = _write(path, render_ledger(report))
    return ReportWritten(str(path), size, round(time.perf_counter() - started, 3), jobs=len(report.jobs))


def _output_path(output: str | Path | None, default: Path) -> Path:
    """Where ``-o`` says, with the default file name inside it when it names a directory (an existing one,
    or any path ending in '/'), as ``cp`` would."""
    if not output:
        return default
    if str(output).endswith(("/", os.sep)) or Path(output).is_dir():
        return Path(output) / default.name
    return Path(output)


def _write(path: Path, text: str) -> int:
    data = text.encode("utf-8")
    write_output(path, data)
    return len(data)


__all__ = ["ReportError", "ReportWritten", "write_job_report", "write_ledger_report"]
