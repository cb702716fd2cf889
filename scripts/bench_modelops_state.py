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
        ledger = Ledger(work / "ledger.db", mirror=open_mirror(f"file://{work / 'registry'}"))
        t = time.perf_counter()
        job, doc, fmt = api.prepare_job(study, bundle=BUNDLE)
        api.create_job(ledger, job, doc, fmt, status=states.SCHEDULED, reason="registered", store=str(store))
        print(f"registered {ledger.summary(job.job_id)['expected']:,} outputs with the registry "
              f"in {time.perf_counter() - t:.1f} s")
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
