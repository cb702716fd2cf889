"""Benchmark registration: 1M expected outputs from a SimulationStudy, and a 400k-task SimJob JSON.

Prints wall time, peak RSS, ledger bytes per expected output and the time of `missing`
listing 10,000 rows, against baselines measured in the same run: the same manifest stored
the ModelOps way (one JobState JSON blob holding an OutputSpec dict per expected output), and
reading the spec file with json.load alone (in a child process like the registration).

    python scripts/bench_register.py [--param-sets 200000] [--replicates 5] [--simjob-tasks 400000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUNDLE = "registry.example/model@sha256:" + "ab" * 32


def study_spec(n_sets: int, n_replicates: int) -> dict:
    return {
        "model": "models.sir.StochasticSIR",
        "scenario": "baseline",
        "sampling_method": "sobol",
        "n_replicates": n_replicates,
        "outputs": ["incidence", "prevalence"],
        "parameter_sets": [{"beta": 0.1 + i * 1e-6, "gamma": 0.05, "n_days": 120} for i in range(n_sets)],
    }


def write_simjob_spec(path: Path, n_tasks: int) -> None:
    """A SimJob JSON of ``n_tasks`` tasks (4 replicates per param set), written task by task."""
    from jobledger.contracts import SimTask, UniqueParameterSet

    head = {
        "job_type": "simulation",
        "job_id": "job-0badc0de",
        "bundle_ref": BUNDLE,
        "priority": 0,
        "metadata": {"n_parameter_sets": n_tasks // 4},
    }
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(head)[:-1] + ', "tasks": [')
        for i in range(n_tasks):
            ups = UniqueParameterSet.from_params({"beta": 0.2 + (i // 4) * 1e-6, "gamma": 0.05})
            task = SimTask(
                BUNDLE, "models.sir.StochasticSIR/baseline", ups, 1000 + i, ("incidence", "prevalence")
            )
            out.write((", " if i else "") + json.dumps(task.to_json()))
        out.write("]}")


def modelops_way_bytes(ledger_path: Path, job_id: str) -> int:
    """Size of a ModelOps JobState blob whose expected_outputs lists one OutputSpec dict per output."""
    import sqlite3

    conn = sqlite3.connect(ledger_path)
    outputs = [
        {
            "param_id": pid,
            "seed": seed,
            "replicate_count": 1,
            "path": path,
            "task_id": tid,
            "entrypoint": ep,
            "output_type": kind,
        }
        for pid, seed, path, tid, ep, kind in conn.execute(
            "SELECT param_id, run_seed, path, task_id, entrypoint, output_type FROM expected_outputs "
            "WHERE job_id = ?",
            (job_id,),
        )
    ]
    conn.close()
    state = {
        "job_id": job_id,
        "status": "running",
        "expected_outputs": outputs,
        "verified_outputs": [],
        "missing_outputs": [],
    }
    return len(json.dumps(state).encode())


def peak_rss_mb() -> float:
    """This process's own high-water mark. ru_maxrss would not do: Linux carries it across
    fork+exec, so a child would report the benchmark parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU of this process (its threads included): what the wall time would be on an idle
    core, a fairer figure than wall time on a shared, busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def json_load_child(args) -> None:
    """The baseline: only reading the spec with json.load, in a fresh process like the registration."""
    start = time.perf_counter()
    with open(args.spec, encoding="utf-8") as handle:
        json.load(handle)
    print(
        json.dumps({"seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb(), "cpu": cpu_seconds()})
    )


def child(args) -> None:
    """Runs in a fresh process so that peak RSS belongs to one registration."""
    from jobledger import api
    from jobledger.ledger import Ledger

    ledger = Ledger(args.db)
    start = time.perf_counter()
    result = api.register(ledger, args.spec, bundle=args.bundle, store=args.store)
    seconds = time.perf_counter() - start
    ledger.close()
    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "job_id": result.job_id,
                "expected": result.expected,
                "seconds": seconds,
                "peak_mb": peak_mb,
                "cpu": cpu_seconds(),
            }
        )
    )


def measure(
    label: str, spec_path: Path, bundle: str | None, workdir: Path, targets: tuple[float, float]
) -> None:
    db = workdir / f"{label}.db"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--db",
        str(db),
        "--spec",
        str(spec_path),
        "--store",
        str(workdir / "store"),
    ]
    if bundle:
        cmd += ["--bundle", bundle]
    base = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--json-load-child", "--spec", str(spec_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    wall = time.perf_counter()
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    wall = time.perf_counter() - wall
    size = db.stat().st_size  # the last connection's close checkpointed the WAL into the file
    per_output = size / out["expected"]
    baseline = modelops_way_bytes(db, out["job_id"]) / out["expected"]
    start = time.perf_counter()
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobledger.cli",
            "--db",
            str(db),
            "missing",
            out["job_id"],
            "--format",
            "paths",
            "-n",
            "10000",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    missing_s = time.perf_counter() - start
    rows = listing.count("\n")
    print(
        f"{label}: {out['expected']:,} expected outputs from a {spec_path.stat().st_size / 1e6:.0f} MB spec "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(
        f"  register: {out['seconds']:.1f} s in-process, {wall:.1f} s wall, {out['cpu']:.1f} s CPU (whole "
        f"process; "
        f"target <= {targets[0]:g} s); peak RSS {out['peak_mb']:.0f} MB (target <= {targets[1]:g} MB)"
    )
    print(
        f"  baseline, json.load of the spec alone: {base['seconds']:.1f} s, {base['cpu']:.1f} s CPU, "
        f"peak RSS {base['peak_mb']:.0f} MB; register is {out['cpu'] / base['cpu']:.1f}x its CPU time and "
        f"{out['peak_mb'] / base['peak_mb']:.2f}x its memory"
    )
    print(
        f"  ledger: {size / 1e6:.1f} MB = {per_output:.0f} bytes/output (target <= 300); "
        f"ModelOps-way JobState blob: {baseline:.0f} bytes/output; ratio {per_output / baseline:.2f}x"
    )
    print(
        f"  `jobledger missing -n 10000`: {rows:,} rows in {missing_s:.2f} s wall incl. interpreter start "
        f"(target <= 1 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--param-sets", type=int, default=200_000)
    parser.add_argument("--replicates", type=int, default=5)
    parser.add_argument("--simjob-tasks", type=int, default=400_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json-load-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db"), parser.add_argument("--spec"), parser.add_argument("--store")
    parser.add_argument("--bundle")
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.json_load_child:
        return json_load_child(args)
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        workdir = Path(tmp)
        study = workdir / "study.json"
        study.write_text(json.dumps(study_spec(args.param_sets, args.replicates)))
        measure("study", study, BUNDLE, workdir, (20, 1024))
        simjob = workdir / "simjob.json"
        write_simjob_spec(simjob, args.simjob_tasks)
        measure("simjob", simjob, None, workdir, (10, 400))


if __name__ == "__main__":
    main()
