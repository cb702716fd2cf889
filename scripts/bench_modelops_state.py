#!/usr/bin/env python
"""Benchmark: state.json of a 1,000,000-output job once jobledger writes ModelOps's progress fields.

A SimulationStudy of 200,000 parameter sets x 5 replicates is registered with a local registry, moved
to validating, and validated against a store where (a) nothing is present (verdict failed: 1,000,000
missing, the path list capped at 10,000) and then (b) every output of the first 400 parameter sets is
(2,000 verified, partial). Prints the size of state.json after each verdict against the baseline
measured in the same run: the same job's blob written the ModelOps way, with every not-verified
result path in ``missing_outputs``.

    python scripts/bench_modelops_state.py [--param-sets 200000] [--replicates 5]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobledger import api, states  # noqa: E402
from jobledger.ledger import Ledger  # noqa: E402
from jobledger.registry import open_mirror  # noqa: E402
from jobledger.registry.state import state_key  # noqa: E402
from jobledger.validation import validate_job  # noqa: E402

BUNDLE = "sha256:" + "5e" * 32

# Runs in another process while a registration runs: tries to take the ledger's write lock every 10 ms and
# prints the longest stretch it could not (the registration's longest hold of the lock), in seconds.
LOCK_PROBE = """
import os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
longest, since = 0.0, None
while not os.path.exists(stop):
    now = time.perf_counter()
    try:
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        conn.close()
        if since is not None:
            longest, since = max(longest, now - since), None
    except sqlite3.OperationalError:
        since = now if since is None else since
    time.sleep(0.01)
print(longest)
"""


def register_timed(db: Path, registry: str | None, study: dict, store: Path):
    """Register the study into a new ledger (with the registry, if given): job id, seconds, and the longest
    time the ledger's write lock was held meanwhile (seen from another process)."""
    ledger = Ledger(db, mirror=open_mirror(registry) if registry else None)
    stop = db.with_suffix(".stop")
    probe = subprocess.Popen([sys.executable, "-c", LOCK_PROBE, str(db), str(stop)], stdout=subprocess.PIPE,
                             text=True)
    time.sleep(0.5)  # the probe is running
    t = time.perf_counter()
    job, doc, fmt = api.prepare_job(study, bundle=BUNDLE)
    api.create_job(ledger, job, doc, fmt, status=states.SCHEDULED, reason="registered", store=str(store))
    seconds = time.perf_counter() - t
    stop.touch()
    held = float(probe.communicate()[0])
    ledger.close()
    return job, seconds, held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--param-sets", type=int, default=200_000)
    parser.add_argument("--replicates", type=int, default=5)
    args = parser.parse_args()
    study = {"model": "models.sir.StochasticSIR", "scenario": "baseline", "n_replicates": args.replicates,
             "outputs": ["incidence"],
             "parameter_sets": [{"beta": 0.1 + i * 1e-6, "gamma": 0.05} for i in range(args.param_sets)]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "store"
        store.mkdir()
        registry = f"file://{work / 'registry'}"
        _, alone, alone_held = register_timed(work / "alone.db", None, study, store)
        job, shared, shared_held = register_timed(work / "ledger.db", registry, study, store)
        job_id = job.job_id
        ledger = Ledger(work / "ledger.db", mirror=open_mirror(registry))
        manifest = (work / "registry" / "jobs" / job_id / "manifest.jsonl.gz").stat().st_size
        print(f"registration of {ledger.summary(job_id)['expected']:,} outputs: {shared:.1f} s with a local "
              f"registry (manifest {manifest / 1e6:.1f} MB), {alone:.1f} s without one "
              f"({shared / alone:.2f}x); longest hold of the ledger's write lock {shared_held:.1f} s with the "
              f"registry, {alone_held:.1f} s without")
        ledger.transition(job.job_id, states.RUNNING, "running")
        ledger.transition(job.job_id, states.VALIDATING, "complete")
        blob_store = ledger.mirror.store

        def state_size() -> tuple[int, dict]:
            data = blob_store.get(state_key(job.job_id))[0]
            return len(data), json.loads(data)

        t = time.perf_counter()
        validate_job(ledger, job.job_id, strategy="list")
        size, state = state_size()
        baseline = sum(len(json.dumps(p)) + 2 for p in
                       (r[0] for r in ledger.conn.execute("SELECT path FROM outputs WHERE job_id = ?",
                                                          (job.job_id,)))) + size
        listed = len(state["missing_outputs"])
        print(f"(a) {state['status']}: state.json {size:,} bytes ({listed:,} paths listed, "
              f"{state['metadata']['jobledger']['missing_outputs']}) in {time.perf_counter() - t:.1f} s; "
              f"every missing path listed: {baseline:,} bytes ({baseline / size:.0f}x)")
        rows = ledger.query("SELECT path FROM outputs WHERE job_id = ? ORDER BY output_id LIMIT ?",
                            (job.job_id, 400 * args.replicates))
        for row in rows:  # a listing classifies by file names: result.json present, no error file → verified
            (store / row["path"]).mkdir(parents=True)
            (store / row["path"] / "result.json").write_text("{}")
        t = time.perf_counter()
        validate_job(ledger, job.job_id, strategy="list", force=True)
        size, state = state_size()
        print(f"(b) {state['status']}: state.json {size:,} bytes, "
              f"tasks_verified {state['tasks_verified']:,}, "
              f"verified_outputs {len(state['verified_outputs']):,} listed "
              f"({state['metadata']['jobledger']['verified_outputs']}) in {time.perf_counter() - t:.1f} s")
        ledger.close()


if __name__ == "__main__":
    main()
