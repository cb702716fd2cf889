#!/usr/bin/env python3
"""The whole artifact-driven loop on this machine, with embedded defaults:

submit (local runtime, local store, the example SIR model ``models.sir`` with its target
``targets.prev/loss``) → run → sync → succeeded;
one output is deleted → validate --force → partial → resume → the child runs only that
task → sync → validate --force the parent → succeeded; then the final status table.

    pip install . && python scripts/demo.py [--dir ./jobledger-demo]

Everything (ledger, store, worker run directories) lives in --dir, which is recreated on
every run; a non-empty directory that a previous demo did not create is left alone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKER = ".jobledger-demo"
STUDY = {
    "model": "models.sir",
    "scenario": "baseline",
    "sampling_method": "grid",
    "parameter_sets": [{"beta": beta, "gamma": 0.1, "n_days": 60} for beta in (0.2, 0.3, 0.4, 0.5)],
    "n_replicates": 3,
    "outputs": ["incidence", "prevalence"],
    "targets": ["targets.prev/loss"],  # one aggregation per param set (scripts/example_model/targets/prev.py)
}


class Demo:
    def __init__(self, workdir: Path, bundle_path: Path):
        self.workdir, self.bundle_path = workdir, bundle_path
        self.env = {**os.environ, "JOBLEDGER_DB": str(workdir / "ledger.db")}
        self.env.pop("JOBLEDGER_REGISTRY", None)

    def jobledger(self, *args, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        if not quiet:
            print(f"\n$ jobledger {' '.join(str(a) for a in args)}", flush=True)
        proc = subprocess.run([sys.executable, "-m", "jobledger", *map(str, args)], env=self.env, text=True,
                              capture_output=True)
        if not quiet:
            print(proc.stdout, end="", flush=True)
            print(proc.stderr, end="", file=sys.stderr, flush=True)
        if check and proc.returncode != 0:
            raise SystemExit(f"demo: `jobledger {' '.join(map(str, args))}` failed ({proc.returncode}): "
                             f"{proc.stderr.strip()}")
        return proc

    def watch_until_done(self, job_id: str) -> None:
        """`sync --watch --until-done` prints each change as it happens and exits when the job has
        its verdict (exit status 0 all verified, as validate's)."""
        self.jobledger("sync", job_id, "--watch", "--interval", "0.3s", "--until-done")

    def run(self) -> int:
        spec = self.workdir / "study.json"
        spec.write_text(json.dumps(STUDY, indent=2))
        store = self.workdir / "store"
        print(f"demo directory: {self.workdir}\nmodel: {self.bundle_path}")

        # No --bundle: the local runtime's bundle is the content digest of --bundle-path (printed on stderr).
        out = self.jobledger("submit", spec, "--runtime", "local", "--store", store,
                             "--bundle-path", self.bundle_path)
        job_id = out.stdout.split(":", 1)[0]
        self.watch_until_done(job_id)

        query = f"SELECT path FROM outputs WHERE job_id = '{job_id}' ORDER BY output_id LIMIT 1 OFFSET 4"
        rows = json.loads(self.jobledger("sql", query, "--json", quiet=True).stdout)
        lost = rows[0]["path"]
        print(f"\n# an output disappears: rm -r {lost}")
        shutil.rmtree(store / lost)
        self.jobledger("validate", "--force", job_id, check=False)  # exit 3: not every output is verified
        self.jobledger("missing", job_id)

        self.jobledger("resume", job_id, "--dry-run")
        self.jobledger("resume", job_id)
        self.watch_until_done(f"{job_id}-r1")
        self.jobledger("validate", "--force", job_id)

        self.jobledger("status", job_id)
        self.jobledger("list")
        final = json.loads(self.jobledger("status", job_id, "--json", quiet=True).stdout)["status"]
        print(f"\ndemo finished: {job_id} is {final}")
        return 0 if final == "succeeded" else 1


def prepare(workdir: Path) -> None:
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise SystemExit(f"demo: {workdir} is not empty and was not made by the demo; pass --dir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="jobledger-demo",
                        help="working directory (default ./jobledger-demo)")
    parser.add_argument("--bundle-path", default=str(HERE / "example_model"),
                        help="model directory (default scripts/example_model)")
    args = parser.parse_args(argv)
    workdir = Path(args.dir).resolve()
    prepare(workdir)
    return Demo(workdir, Path(args.bundle_path).resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
