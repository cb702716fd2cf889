"""Benchmark `jobledger report` on synthetic jobs of 100,000 and 1,000,000 outputs.

Each job (see synthetic_job.py: N/5 parameter sets × 4 replicates + 1 aggregation, ~95 % verified) is
registered in its own ledger; then `jobledger report JOB` runs as a fresh process and its wall
time (interpreter start included), peak RSS and file size are printed against the targets and
against a baseline measured in the same run: `jobledger sql` writing every output of the job
as CSV (the same rows read through the same CLI, with no page built).

    python scripts/bench_report.py [--sizes 100000 1000000]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_job import make_job  # noqa: E402  (after the path insert)

TARGETS = {100_000: (3.0, 5.0), 1_000_000: (15.0, 10.0)}   # seconds, MB


def run(args: list[str], out: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one CLI process."""
    started = time.perf_counter()
    with open(out or os.devnull, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "jobledger.cli", *args], stdout=sink,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def bench(outputs: int, workdir: Path) -> None:
    db = workdir / f"ledger-{outputs}.db"
    started = time.perf_counter()
    # In a process of its own: a child forked from a parent that had built the job in memory would
    # report the parent's peak RSS as its own (Linux keeps ru_maxrss across fork and exec).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        job_id = pool.apply(make_job, (db, outputs // 5, 4))
    setup = time.perf_counter() - started
    page = workdir / f"report-{outputs}.html"
    seconds, rss = run(["--db", str(db), "report", job_id, "-o", str(page)])
    size_mb = page.stat().st_size / 1e6
    every_output = f"SELECT * FROM expected_outputs WHERE job_id = '{job_id}'"
    base_s, base_rss = run(["--db", str(db), "sql", every_output, "--csv"], workdir / "baseline.csv")
    html = page.read_text(encoding="utf-8")
    cells = html.count("<td data-state=")
    target_s, target_mb = TARGETS.get(outputs, (None, None))
    print(f"{outputs:,} outputs ({outputs // 5:,} param sets x (4 replicates + 1 aggregation); "
          f"set-up {setup:.1f} s)")
    print(f"  report: {seconds:.2f} s wall incl. interpreter start"
          + (f" (target <= {target_s:g} s)" if target_s else "") + f", peak RSS {rss:.0f} MB")
    print(f"  file: {size_mb:.2f} MB" + (f" (target <= {target_mb:g} MB)" if target_mb else "")
          + f", {cells:,} map cells")
    print(f"  baseline `jobledger sql ... --csv` of every output: {base_s:.2f} s, "
          f"peak RSS {base_rss:.0f} MB; report / baseline = {seconds / base_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for outputs in args.sizes:
            bench(outputs, Path(tmp))


if __name__ == "__main__":
    main()
