#!/usr/bin/env python3
"""Benchmark: reading the status of many Kubernetes jobs with one LIST call (what `sync` does)
against the baseline of one GET per job, measured in the same run against the loopback
API stand-in (tests/k8s_standin.py) through the real `kubernetes` client.

    python scripts/bench_sync.py [--jobs 300] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from k8s_standin import KubeStandIn  # noqa: E402

from jobledger.runtimes.kubernetes import KubernetesRuntime, job_status, runner_job_manifest  # noqa: E402

NS = "modelops-dask-dev"


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    standin = KubeStandIn().start()
    try:
        kubeconfig = standin.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        runtime = KubernetesRuntime(kubeconfig=str(kubeconfig))
        rows = []
        for i in range(args.jobs):
            job_id = f"job-{i:08x}"
            standin.add_job(NS, runner_job_manifest(job_id, NS, f"jobs/simulation/{job_id}.json",
                                                    bundle_registry="registry.example/models"))
            standin.set_status(NS, job_id, {"active": 1} if i % 3 else {"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]})
            rows.append({"job_id": job_id, "k8s_namespace": NS, "k8s_name": job_id})
        runtime.status(rows[:1])  # connect once before timing
        standin.reset_calls()
        listed = best_of(args.repeat, lambda: runtime.status(rows))
        list_requests = len(standin.calls()) // args.repeat
        standin.reset_calls()
        fetched = best_of(args.repeat, lambda: [runtime._get(NS, r["job_id"]) for r in rows])
        get_requests = len(standin.calls()) // args.repeat
        same = {r["job_id"]: job_status(runtime._get(NS, r["job_id"])) for r in rows}
        assert runtime.status(rows) == same, "the two ways of reading status disagree"
    finally:
        standin.stop()
    print(f"jobs: {args.jobs}")
    print(f"one LIST by label selector: {listed * 1000:.1f} ms, {list_requests} request(s)")
    print(f"baseline, one GET per job:  {fetched * 1000:.1f} ms, {get_requests} request(s)")
    print(f"speed-up: {fetched / listed:.1f}x, requests: {get_requests / max(list_requests, 1):.0f}x fewer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
