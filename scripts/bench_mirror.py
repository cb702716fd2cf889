#!/usr/bin/env python
"""Benchmark: mirroring a 100,000-output job to the registry, against the ModelOps way, in one run.

jobledger way: ``push`` (manifest side blob created once, observed-state side blob, small state.json),
then status changes by compare-and-swap on the small state.json, then ``pull`` into an empty ledger.
ModelOps way (baseline): the whole manifest inside state.json as OutputSpec dicts
(``expected_outputs``, plus ``verified_outputs``/``missing_outputs``), rewritten on every status change,
and read back whole.

    python scripts/bench_mirror.py                 # local directory backend
    python scripts/bench_mirror.py --azurite       # also against a throw-away Azurite
    python scripts/bench_mirror.py --outputs 20000 # a smaller job
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from jobledger import api, states  # noqa: E402
from jobledger.ledger import Ledger, utcnow  # noqa: E402
from jobledger.registry import open_mirror, open_versioned_store  # noqa: E402
from jobledger.registry.mirror import Mirror  # noqa: E402
from jobledger.registry.transfer import pull, push  # noqa: E402
from jobledger.registry.state import state_key  # noqa: E402

STATUS_CHANGES = [states.RUNNING, states.VALIDATING, states.PARTIAL]
BUNDLE = "sha256:" + "5e" * 32


def study(n_outputs: int) -> dict:
    replicates = 100
    return {"model": "models.seir.StochasticSEIR", "scenario": "baseline", "n_replicates": replicates,
            "outputs": ["incidence", "prevalence"],
            "parameter_sets": [{"beta": 0.1 + i * 1e-4, "gamma": 0.05, "n_days": 120}
                               for i in range(n_outputs // replicates)]}


def blob_bytes(store, prefix: str) -> int:
    return sum(len(store.get(k)[0]) for k in store.list_keys(prefix))


def mark_validated(ledger: Ledger, job_id: str, fraction: float) -> None:
    """Stand in for a validation run: most outputs verified, the rest missing (what validate records)."""
    with ledger.transaction():
        run = ledger.conn.execute(
            "INSERT INTO validation_runs (job_id, started_at, finished_at, strategy, expected, outcome) "
            "VALUES (?, ?, ?, 'list', (SELECT count(*) FROM outputs WHERE job_id = ?), 'partial')",
            (job_id, utcnow(), utcnow(), job_id)).lastrowid
        ledger.conn.execute(
            "INSERT INTO output_states (output_id, state, first_verified_run, last_seen_run, state_run) "
            "SELECT output_id, CASE WHEN output_id % 1000 < ? THEN 'verified' ELSE 'missing' END, "
            "CASE WHEN output_id % 1000 < ? THEN ? END, CASE WHEN output_id % 1000 < ? THEN ? END, ? "
            "FROM manifest WHERE job_id = ?",
            (int(1000 * fraction), int(1000 * fraction), run, int(1000 * fraction), run, run, job_id))


def jobledger_way(url: str, work: Path, spec: dict) -> dict:
    a = Ledger(work / f"a-{uuid.uuid4().hex[:6]}.db")
    job, doc, fmt = api.prepare_job(spec, bundle=BUNDLE)
    api.create_job(a, job, doc, fmt, status=states.SCHEDULED, reason="registered", store=str(work / "store"))
    job_id = job.job_id
    n = a.summary(job_id)["expected"]
    a.mirror = open_mirror(url)
    store = a.mirror.store
    written = 0

    t = time.perf_counter()
    push(a, [job_id])
    push_s = time.perf_counter() - t
    written += blob_bytes(store, f"jobs/{job_id}/")

    t = time.perf_counter()
    for status in STATUS_CHANGES[:2]:
        a.transition(job_id, status, "bench")
        written += len(store.get(state_key(job_id))[0])
    mark_validated(a, job_id, 0.9)
    a.notify_changed(job_id)  # publishes the observed states once
    a.transition(job_id, STATUS_CHANGES[2], "bench")
    a.transition(job_id, states.VALIDATING, "bench re-validation", revalidate=True)
    a.transition(job_id, states.PARTIAL, "bench")
    changes_s = time.perf_counter() - t
    stored = blob_bytes(store, f"jobs/{job_id}/")
    # writes after the push: five state.json rewrites plus one observed blob
    written += 3 * len(store.get(state_key(job_id))[0]) + len(store.get(f"jobs/{job_id}/observed.json.gz")[0])

    b = Ledger(work / f"b-{uuid.uuid4().hex[:6]}.db", mirror=Mirror(open_versioned_store(url)))
    t = time.perf_counter()
    pull(b, [job_id])
    pull_s = time.perf_counter() - t
    assert b.summary(job_id) == a.summary(job_id), "pull did not rebuild the same rows"
    a.close()
    b.close()
    return {"outputs": n, "push_s": push_s, "status_changes_s": changes_s, "pull_s": pull_s,
            "stored_bytes": stored, "written_bytes": written}


def modelops_way(url: str, work: Path, spec: dict) -> dict:
    """The whole manifest inside state.json as OutputSpec dicts, rewritten (CAS) on every status change."""
    ledger = Ledger(work / f"m-{uuid.uuid4().hex[:6]}.db")
    job, doc, fmt = api.prepare_job(spec, bundle=BUNDLE)
    api.create_job(ledger, job, doc, fmt, status=states.SCHEDULED, reason="registered", store=str(work / "store"))
    rows = ledger.query("SELECT o.task_id, p.param_id, o.run_seed AS seed, o.path, o.kind FROM outputs o "
                        "JOIN params p USING (param_key) WHERE o.job_id = ? ORDER BY output_id", (job.job_id,))
    specs = [{"param_id": r["param_id"], "seed": int(r["seed"]), "task_id": r["task_id"], "path": r["path"],
              "output_type": r["kind"], "replicate_idx": i % 100} for i, r in enumerate(rows)]
    store = open_versioned_store(url)
    key = f"jobs/{job.job_id}-modelops/state.json"

    def state(status, verified):
        return json.dumps({"job_id": job.job_id, "status": status, "created_at": utcnow(), "updated_at": utcnow(),
                           "k8s_name": job.job_id, "k8s_namespace": "modelops-dask-dev", "k8s_uid": None,
                           "tasks_total": len(specs), "tasks_completed": verified, "error_message": None,
                           "error_code": None, "results_path": None, "expected_outputs": specs,
                           "verified_outputs": specs[:verified], "missing_outputs": specs[verified:],
                           "tasks_verified": verified, "validation_started_at": None,
                           "validation_completed_at": None, "validation_attempts": 0,
                           "last_validation_error": None, "metadata": job.metadata}).encode()

    t = time.perf_counter()
    first = state(states.SCHEDULED, 0)
    store.create_if_absent(key, first)
    push_s = time.perf_counter() - t
    written = len(first)
    t = time.perf_counter()
    verified = 0
    for status in STATUS_CHANGES + [states.VALIDATING, states.PARTIAL]:
        if status == states.PARTIAL:
            verified = int(len(specs) * 0.9)
        _, version = store.get(key)
        data = state(status, verified)
        assert store.put(key, data, version)
        written += len(data)
    changes_s = time.perf_counter() - t
    t = time.perf_counter()
    doc = json.loads(store.get(key)[0])
    pull_s = time.perf_counter() - t
    assert len(doc["expected_outputs"]) == len(specs)
    ledger.close()
    return {"outputs": len(specs), "push_s": push_s, "status_changes_s": changes_s, "pull_s": pull_s,
            "stored_bytes": len(store.get(key)[0]), "written_bytes": written}


def report(backend: str, ours: dict, theirs: dict) -> None:
    n = ours["outputs"]
    print(f"\n== {backend}: {n:,} outputs, push + 5 status changes + pull ==")
    print(f"{'':24}{'jobledger':>14}{'ModelOps way':>16}{'ratio':>10}")
    for name, label, scale in (("stored_bytes", "stored bytes/output", n), ("written_bytes", "written bytes/output", n),
                               ("push_s", "push s", 1), ("status_changes_s", "5 status changes s", 1),
                               ("pull_s", "pull s", 1)):
        a, b = ours[name] / scale, theirs[name] / scale
        fmt = "{:>14.2f}{:>16.2f}" if "bytes" in name else "{:>14.3f}{:>16.3f}"
        ratio = f"{b / a:>9.1f}x" if a else "      n/a"
        print(f"{label:24}" + fmt.format(a, b) + ratio)
    print("(ratio = ModelOps way / jobledger; pull for jobledger rebuilds every ledger row, "
          "for the ModelOps way it only downloads and parses state.json)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outputs", type=int, default=100_000)
    parser.add_argument("--azurite", action="store_true", help="also measure against a throw-away Azurite")
    args = parser.parse_args()
    spec = study(args.outputs)
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        work = Path(tmp)
        url = f"file://{work / 'registry'}"
        report("local directory", jobledger_way(url, work, spec), modelops_way(url, work, spec))
        if args.azurite:
            import os

            from azurite import Azurite
            service = Azurite().start()
            try:
                os.environ["AZURE_STORAGE_CONNECTION_STRING"] = service.connection_string
                url = "az://job-registry/bench"
                report("Azurite", jobledger_way(url, work, spec), modelops_way(url, work, spec))
            finally:
                service.cleanup()


if __name__ == "__main__":
    main()
