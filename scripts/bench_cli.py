"""Benchmark the everyday CLI: `missing` on a 1,000,000-output job, and read-command start-up.

1. `missing` (table, CSV, NDJSON) on a job whose 1,000,000 expected outputs are all unverified:
   time until the first row reaches a pipe, and until the last, against the path the CLI took
   before rows streamed (measured in the same run, same ledger): the whole query fetched into a
   list of dicts, then one tabulate() call, then printing.
2. Start-up of read commands (`path`, `--help`, `list`, `status`, `missing`) on a small ledger
   (one 30-output job) over repeated runs, median and 90th percentile, against `python -c pass`
   and `python -c "import click"`. The target is a median of at most 150 ms.

    python scripts/bench_cli.py [--param-sets 200000] [--replicates 5] [--runs 15] [--keep DIR]
                                 [--startup-only]

The ledger is registered once per DIR (--keep reuses it across runs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "registry.example/model@sha256:" + "ab" * 32
JOB = "job-00bec001"

# What `jobledger missing JOB` did before rows streamed: api.missing returned ledger.unverified()
# (a list of dicts), then render.table() handed every row to tabulate in one call.
OLD_PATH = """
import sys
from tabulate import tabulate
from jobledger.ledger import Ledger
ledger = Ledger(sys.argv[1], readonly=True)
rows = [dict(r) for r in ledger.conn.execute(
    "SELECT o.path, o.state AS reason, p.param_id, o.run_seed AS seed, o.task_id, o.detail "
    "FROM outputs o JOIN params p ON p.param_key = o.param_key "
    "WHERE o.job_id = ? AND o.state <> 'verified' ORDER BY o.output_id", (sys.argv[2],))]
columns = ["path", "reason", "param_id", "seed", "task_id", "detail"]
print(tabulate([[r.get(c) for c in columns] for r in rows], headers=columns, tablefmt="simple",
               disable_numparse=True, missingval=""))
"""


def environment(db: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JOBLEDGER_DB": str(db)}


def make_ledger(db: Path, n_sets: int, n_replicates: int, quiet: bool = False) -> None:
    sys.path.insert(0, str(ROOT))
    from jobledger import api
    study = {"model": "models.sir.StochasticSIR", "scenario": "baseline", "n_replicates": n_replicates,
             "outputs": ["incidence", "prevalence"],
             "parameter_sets": [{"beta": 0.1 + i * 1e-6, "gamma": 0.05} for i in range(n_sets)]}
    started = time.perf_counter()
    with api.open_ledger(db) as ledger:
        result = api.register(ledger, study, bundle=BUNDLE, job_id=JOB, store=str(db.parent / "store"))
    if not quiet:
        print(f"registered {result.expected:,} outputs in {time.perf_counter() - started:.1f} s (setup)")


def timed_rows(command: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds to the first line, seconds to the end, lines) of a command writing to a pipe."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.readline()
    first_at = time.perf_counter() - started
    lines = 1 if first else 0
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        lines += chunk.count(b"\n")
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode})")
    return first_at, time.perf_counter() - started, lines


def startup(command: list[str], env: dict, runs: int) -> tuple[float, float]:
    # one untimed run first: the page cache holds the interpreter and the package afterwards
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times) * 1000, times[int(0.9 * (len(times) - 1))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--param-sets", type=int, default=200_000)
    parser.add_argument("--replicates", type=int, default=5)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the ledger in DIR")
    parser.add_argument("--startup-only", action="store_true",
                        help="only part 2 (no 1,000,000-output ledger)")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="jobledger-bench-cli-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "ledger.db"
    jl = [sys.executable, "-m", "jobledger"]
    n = args.param_sets * args.replicates
    results = {} if args.startup_only else missing_figures(db, args, jl, n)
    worst, python = startup_figures(workdir, args, jl)
    figures = {k: {"first_s": round(v[0], 3), "total_s": round(v[1], 2)} for k, v in results.items()}
    print(json.dumps({"outputs": None if args.startup_only else n, "missing": figures,
                      "startup_worst_ms": round(worst), "python_ms": round(python)}))
    return 0


def missing_figures(db: Path, args: argparse.Namespace, jl: list[str], n: int) -> dict:
    if not db.exists():
        make_ledger(db, args.param_sets, args.replicates)
    env = environment(db)
    print(f"\nmissing on a {n:,}-output job (all unverified), stdout a pipe")
    print(f"{'path':<34}{'first row':>12}{'total':>10}{'lines':>12}")
    old = timed_rows([sys.executable, "-c", OLD_PATH, str(db), JOB], env)
    results = {"old: list + tabulate": old}
    for label, extra in (("missing (table, streamed)", []), ("missing --csv", ["--csv"]),
                         ("missing --nl", ["--nl"]), ("missing --format paths", ["--format", "paths"])):
        results[label] = timed_rows(jl + ["missing", JOB, *extra], env)
    for label, (first, total, lines) in results.items():
        print(f"{label:<34}{first:>10.3f} s{total:>8.2f} s{lines:>12,}")
    new = results["missing (table, streamed)"]
    print(f"first row: {old[0] / new[0]:.0f}x sooner than the old path; total: {old[1] / new[1]:.2f}x")
    return results


def startup_figures(workdir: Path, args: argparse.Namespace, jl: list[str]) -> tuple[float, float]:
    small = workdir / "small.db"
    if not small.exists():
        make_ledger(small, 10, 3, quiet=True)
    env = environment(small)
    print(f"\nstart-up on a small ledger, {args.runs} runs each (median / p90 ms)")
    baselines = {"python -c pass": [sys.executable, "-c", "pass"],
                 "python -c 'import click'": [sys.executable, "-c", "import click"]}
    commands = {"jobledger path": jl + ["path"], "jobledger --help": jl + ["--help"],
                "jobledger list -n 5": jl + ["list", "-n", "5"],
                "jobledger status JOB --json": jl + ["status", JOB, "--json"],
                "jobledger missing JOB -n 1": jl + ["missing", JOB, "-n", "1"]}
    worst, python = 0.0, 0.0
    for label, command in {**baselines, **commands}.items():
        median, p90 = startup(command, env, args.runs)
        if label in commands:
            worst = max(worst, median)
        python = python or median
        print(f"{label:<34}{median:>8.0f}{p90:>8.0f}")
    verdict = "met" if worst <= 150 else "MISSED"
    print(f"slowest read command median {worst:.0f} ms ({worst - python:.0f} ms over a bare interpreter "
          f"on this machine now): target <= 150 ms {verdict}")
    return worst, python


if __name__ == "__main__":
    sys.exit(main())
