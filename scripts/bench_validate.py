"""Validation benchmarks: each figure is printed with its ratio to a baseline measured in the same run.

  local  – a directory store with N expected outputs (default 200,000; 95% present, in all five
           states): the list strategy vs one stat per expected output (the ModelOps way) and vs
           ``find STORE -name result.json``.
  core   – the classification core (stream a pre-materialised listing into the TEMP table,
           classify, record the run) at 1,000,000 expected outputs: time and peak RSS.
  azure  – Azurite with 5,000 expected outputs: list vs head strategy, requests and time.

    python scripts/bench_validate.py [local|core|azure|all] [--outputs N] [--core-outputs N]
                                     [--azure-outputs N] [--workdir DIR]

Trees and ledgers are cached in --workdir (default /tmp/jobledger-bench) between runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from jobledger import api, states  # noqa: E402
from jobledger.contracts import SimJob, SimTask, UniqueParameterSet  # noqa: E402
from jobledger.ledger import Ledger  # noqa: E402
from jobledger.layout import ERROR_FILE, METADATA_FILE, RESULT_FILE  # noqa: E402

BUNDLE = "sha256:" + "c" * 64
ENTRYPOINT = "models.bench/baseline"
REPLICATES = 10


def make_job(job_id: str, n_outputs: int) -> SimJob:
    tasks = []
    for p in range(-(-n_outputs // REPLICATES)):
        ups = UniqueParameterSet.from_params({"p": p})
        for r in range(REPLICATES):
            if len(tasks) < n_outputs:
                tasks.append(SimTask(BUNDLE, ENTRYPOINT, ups, 1000 * p + r, ("incidence",)))
    return SimJob(job_id, BUNDLE, tuple(tasks))


def register(db: Path, job_id: str, n_outputs: int, store: str) -> list[str]:
    with Ledger(db) as ledger:
        if not ledger.job_exists(job_id):
            job = make_job(job_id, n_outputs)
            api.create_job(ledger, job, job.to_json(), "simjob", status=states.SCHEDULED, reason="bench", store=store)
        return [r[0] for r in ledger.conn.execute("SELECT path FROM outputs WHERE job_id = ? ORDER BY output_id",
                                                  (job_id,))]


def planned_states(paths: list[str]) -> dict[str, str]:
    """95% present: of those ~1% errored and ~1% incomplete, the rest verified."""
    out = {}
    for i, path in enumerate(paths):
        k = i % 100
        out[path] = "missing" if k < 5 else "errored" if k == 5 else "incomplete" if k == 6 else "verified"
    return out


def unexpected_paths(paths: list[str], count: int) -> list[str]:
    return [p.rsplit("/", 1)[0] + f"/seed_{9_000_000_000 + i}" for i, p in enumerate(paths[:count])]


def files_for(state: str) -> dict[str, bytes]:
    meta = b'{"bench": true}'
    if state == "verified":
        return {METADATA_FILE: meta, "artifact_incidence.arrow": b"x" * 64, RESULT_FILE: b'{"outputs": {}}'}
    if state == "errored":
        return {METADATA_FILE: meta, ERROR_FILE: b"boom", RESULT_FILE: b'{"error": {}}'}
    if state == "incomplete":
        return {METADATA_FILE: meta, "artifact_incidence.arrow": b"x" * 64}
    return {}


def build_tree(store: Path, paths: list[str]) -> None:
    marker = store / ".bench-complete"
    if marker.exists():
        return
    shutil.rmtree(store, ignore_errors=True)
    plan = planned_states(paths)
    for path in list(paths) + unexpected_paths(paths, len(paths) // 200):
        files = files_for(plan.get(path, "verified"))
        if not files:
            continue
        folder = store / path
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(folder / name, "wb") as handle:
                handle.write(data)
    marker.write_text("ok")


def timed(fn, repeat: int = 3):
    best, value = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    return best, value


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the forking parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- local disk

def bench_local(workdir: Path, n_outputs: int) -> None:
    from jobledger import validation
    from jobledger.stores import open_store
    store = workdir / f"store-{n_outputs}"
    db = workdir / f"local-{n_outputs}.db"
    job_id = "job-0000a001"
    t0 = time.perf_counter()
    paths = register(db, job_id, n_outputs, str(store))
    build_tree(store, paths)
    print(f"local: {n_outputs:,} expected outputs, tree and ledger ready in {time.perf_counter() - t0:.1f} s "
          f"(cached in {workdir})")

    def stat_baseline():
        # The ModelOps way: read the expected paths, one stat of result.json per output.
        with Ledger(db, readonly=True) as ledger:
            rows = ledger.conn.execute("SELECT path FROM outputs WHERE job_id = ?", (job_id,)).fetchall()
        root, present = str(store), 0
        for (path,) in rows:
            try:
                os.stat(f"{root}/{path}/{RESULT_FILE}")
                present += 1
            except FileNotFoundError:
                pass
        return present

    def pathlib_baseline():
        with Ledger(db, readonly=True) as ledger:
            rows = ledger.conn.execute("SELECT path FROM outputs WHERE job_id = ?", (job_id,)).fetchall()
        return sum((store / path / RESULT_FILE).exists() for (path,) in rows)

    def find_baseline():
        out = subprocess.run(["find", str(store), "-name", RESULT_FILE], capture_output=True, check=True).stdout
        return out.count(b"\n")

    def list_core():
        # observe + classify: every expected output gets one of the four states, unexpected dirs found.
        with Ledger(db) as ledger:
            job = ledger.job(job_id)
            st = open_store(job["store_url"])
            plan = validation.make_plan(ledger, job, st, "list")
            validation.observe(ledger, job_id, st, plan)
            validation.classify(ledger, job_id)
            counts = dict(ledger.conn.execute("SELECT state, count(*) FROM observed GROUP BY state").fetchall())
            counts["unexpected"] = ledger.conn.execute(
                "SELECT count(*) FROM listing WHERE has_result AND dir NOT IN "
                "(SELECT path FROM outputs WHERE job_id = ?)", (job_id,)).fetchone()[0]
            return counts, st.requests, len(plan.parts)

    def validate_full():
        with Ledger(db) as ledger:
            return validation.validate_job(ledger, job_id, strategy="list")

    t_stat, present = timed(stat_baseline)
    t_path, _ = timed(pathlib_baseline, 1)
    t_find, found = timed(find_baseline)
    t_core, (counts, requests, parts) = timed(list_core)
    t_first, first = timed(validate_full, 1)
    t_again, again = timed(validate_full, 2)
    print(f"  stat baseline (os.stat per output)   {t_stat:7.2f} s   {present:,} result.json present")
    print(f"  pathlib baseline (Path.exists)       {t_path:7.2f} s")
    print(f"  find STORE -name result.json         {t_find:7.2f} s   {found:,} found")
    print(f"  list strategy: list + classify       {t_core:7.2f} s   {counts}, {requests:,} directory reads, "
          f"{parts} parallel parts")
    print(f"  validate_job, first run (records {first['changed']:,} changes) {t_first:7.2f} s")
    print(f"  validate_job, re-run (steady state)  {t_again:7.2f} s   changed={again['changed']}")
    print(f"  ratio list+classify / stat baseline  {t_core / t_stat:5.2f}x  (target <= 1.0x)")
    print(f"  ratio list+classify / find           {t_core / t_find:5.2f}x  (target <= 2.0x)")
    print(f"  ratio validate re-run / stat baseline {t_again / t_stat:5.2f}x, / find {t_again / t_find:5.2f}x")


# ---------------------------------------------------------------- classification core at scale

def core_child(db: str, listing: str, job_id: str) -> None:
    """Runs in a fresh process so its peak RSS is the core's own."""
    from jobledger import validation
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    with Ledger(db) as ledger:
        conn = ledger.conn
        conn.execute("CREATE TEMP TABLE listing (dir TEXT NOT NULL, has_result INTEGER NOT NULL, "
                     "has_error INTEGER NOT NULL, has_metadata INTEGER NOT NULL, files INTEGER NOT NULL)")

        def rows():
            with open(listing, encoding="utf-8") as handle:
                for line in handle:
                    d, r, e, m, f = line.rstrip("\n").split("\t")
                    yield d, int(r), int(e), int(m), int(f)

        conn.execute("BEGIN")
        conn.executemany("INSERT INTO listing VALUES (?,?,?,?,?)", rows())
        conn.execute("CREATE INDEX temp.listing_dir ON listing(dir)")
        conn.execute("COMMIT")
        t_load = time.perf_counter() - t0
        validation.classify(ledger, job_id)
        t_classify = time.perf_counter() - t0 - t_load
        with ledger.transaction():
            recorded = validation._record(ledger, job_id, {"started_at": "bench", "store": "bench",
                                                           "strategy": "list", "deep": False, "requests": 0},
                                          unexpected_known=True)
        t_total = time.perf_counter() - t0
    print(json.dumps({"load": t_load, "classify": t_classify, "total": t_total, "rss_start": rss_start,
                      "rss_peak": peak_rss_mb(), "recorded": {k: recorded[k] for k in
                                                              ("expected", "verified", "missing", "errored",
                                                               "incomplete", "unexpected", "changed")}}))


def bench_core(workdir: Path, n_outputs: int) -> None:
    db = workdir / f"core-{n_outputs}.db"
    listing = workdir / f"core-{n_outputs}.tsv"
    job_id = "job-0000c0re"
    t0 = time.perf_counter()
    paths = register(db, job_id, n_outputs, str(workdir / "core-store"))
    if not listing.exists():
        plan = planned_states(paths)
        with open(listing, "w", encoding="utf-8") as out:
            for path in paths + unexpected_paths(paths, len(paths) // 200):
                state = plan.get(path, "verified")
                if state != "missing":
                    files = files_for(state)
                    out.write(f"{path}\t{int(RESULT_FILE in files)}\t{int(ERROR_FILE in files)}\t"
                              f"{int(METADATA_FILE in files)}\t{len(files)}\n")
    del paths
    print(f"core: {n_outputs:,} expected outputs, ledger and listing ready in {time.perf_counter() - t0:.1f} s")
    for label in ("first run (every present output changes state)", "re-run (no changes)"):
        out = subprocess.run([sys.executable, __file__, "core-child", str(db), str(listing), job_id],
                             capture_output=True, text=True, check=True).stdout
        doc = json.loads(out.strip().splitlines()[-1])
        print(f"  {label}: load {doc['load']:.2f} s + classify {doc['classify']:.2f} s, total with recording "
              f"{doc['total']:.2f} s (target <= 10 s, {doc['total'] / 10:.2f}x of it); peak RSS "
              f"{doc['rss_peak']:.0f} MB (interpreter + imports {doc['rss_start']:.0f} MB; target <= 500 MB)")
        print(f"    {doc['recorded']}")
    # Reset so the next benchmark run measures a first run again.
    with Ledger(db) as ledger, ledger.transaction():
        ledger.conn.execute("DELETE FROM output_events")
        ledger.conn.execute("DELETE FROM unexpected_paths")
        ledger.conn.execute("UPDATE outputs SET state = 'missing', detail = NULL, first_verified_run = NULL, "
                            "last_seen_run = NULL, state_run = NULL")
        ledger.conn.execute("DELETE FROM validation_runs")


# ---------------------------------------------------------------- Azurite

def bench_azure(workdir: Path, n_outputs: int) -> None:
    from azurite import Azurite
    from jobledger import validation
    from jobledger.stores import open_store
    service = Azurite(location=tempfile.mkdtemp(prefix="azurite-bench-")).start()
    try:
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = service.connection_string
        db = Path(tempfile.mkdtemp(prefix="bench-azure-")) / "ledger.db"
        url = "az://bench/prov"
        paths = register(db, "job-0000a2e0", n_outputs, url)
        local = workdir / f"azure-tree-{n_outputs}"
        build_tree(local, paths)
        t0 = time.perf_counter()
        uploaded = open_store(url).upload_tree(local, threads=32)
        print(f"azure: {n_outputs:,} expected outputs, {uploaded:,} blobs uploaded to Azurite in "
              f"{time.perf_counter() - t0:.1f} s")
        results = {}
        with Ledger(db) as ledger:
            for strategy in ("head", "list", "head", "list"):
                t = time.perf_counter()
                r = validation.validate_job(ledger, "job-0000a2e0", strategy=strategy)
                results.setdefault(strategy, []).append((time.perf_counter() - t, r))
        for strategy, runs in results.items():
            best = min(runs, key=lambda x: x[0])
            r = best[1]
            print(f"  {strategy:4} strategy  {best[0]:7.2f} s  {r['requests']:6,} requests  verified={r['verified']:,} "
                  f"missing={r['missing']:,} errored={r['errored']:,} incomplete={r['incomplete']:,} "
                  f"unexpected={r['unexpected']}")
        t_head, t_list = min(x[0] for x in results["head"]), min(x[0] for x in results["list"])
        print(f"  list is {t_head / t_list:.1f}x faster than head (target >= 10x)")
    finally:
        service.cleanup()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "core-child":
        core_child(*argv[1:4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=["local", "core", "azure", "all"])
    parser.add_argument("--outputs", type=int, default=200_000, help="expected outputs for the local benchmark")
    parser.add_argument("--core-outputs", type=int, default=1_000_000)
    parser.add_argument("--azure-outputs", type=int, default=5_000)
    parser.add_argument("--workdir", default="/tmp/jobledger-bench")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.which in ("local", "all"):
        bench_local(workdir, args.outputs)
    if args.which in ("core", "all"):
        bench_core(workdir, args.core_outputs)
    if args.which in ("azure", "all"):
        bench_azure(workdir, args.azure_outputs)


if __name__ == "__main__":
    main()
