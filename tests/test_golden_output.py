"""Golden output: what the CLI prints on the sample job and in the demo, byte for byte after
normalising what legitimately varies (temporary paths, timestamps, durations).

The expected files under tests/golden/ were generated from the code before the issue-8
refactor; a change that alters them changes what users see and must say so in its commit.
Regenerate on purpose with ``JOBLEDGER_GOLDEN_UPDATE=1 pytest tests/test_golden_output.py``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import cli, copy_tree

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("JOBLEDGER_GOLDEN_UPDATE") == "1"
JOB = "job-5a11e0c3"

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
_SECONDS_TEXT = re.compile(r"\b\d+\.\d\d s\b")
_SECONDS_JSON = re.compile(r'"seconds": [0-9.e-]+')


@pytest.fixture
def workdir():
    """A directory whose path always has the same length (tables pad to the longest cell)."""
    path = Path(tempfile.mkdtemp(prefix="jl-golden-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def normalise(text: str, workdir: Path, spec_dir: Path) -> str:
    for real, alias in ((str(workdir), "<TMP>"), (str(spec_dir), "<SPEC>"), (str(ROOT), "<REPO>"),
                        (sys.executable, "<PYTHON>")):
        text = text.replace(real, alias)
    text = _TIME.sub("<TIME>", text)
    text = _SECONDS_TEXT.sub("<SEC> s", text)
    return _SECONDS_JSON.sub('"seconds": <SEC>', text)


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}; generate it with JOBLEDGER_GOLDEN_UPDATE=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"output of {name} changed"


def transcript(args, result) -> str:
    return (f"$ jobledger {' '.join(map(str, args))}\nexit: {result.exit_code}\n--- stdout\n{result.stdout}"
            f"--- stderr\n{result.stderr}")


# (name, arguments after `--db DB`): run in this order against one ledger; `{...}` are filled in.
SAMPLE_STEPS = [
    ("path", ["path"]),
    ("register", ["register", "{spec}", "--store", "{store}"]),
    ("register-again", ["register", "{spec}", "--store", "{store}"]),
    ("register-again-json", ["register", "{spec}", "--store", "{store}", "--json"]),
    ("register-conflict", ["register", "{spec}", "--store", "{store}", "--seed-policy", "task"]),
    ("status-registered", ["status", JOB]),
    ("missing-registered", ["missing", JOB]),
    ("explain", ["validate", JOB, "--explain"]),
    ("explain-json", ["validate", JOB, "--explain", "--json"]),
    ("validate-scheduled", ["validate", JOB]),
    ("@finish", []),
    ("validate-finished", ["validate", JOB]),
    ("validate-kept-json", ["validate", JOB, "--json"]),
    ("validate-force-json", ["validate", JOB, "--force", "--json"]),
    ("validate-force-head", ["validate", JOB, "--force", "--strategy", "head"]),
    ("status", ["status", JOB]),
    ("status-json", ["status", JOB, "--json"]),
    ("list", ["list"]),
    ("list-json", ["list", "--json"]),
    ("list-status", ["list", "--status", "partial", "-n", "5"]),
    ("list-bad-status", ["list", "--status", "bogus"]),
    ("list-bad-since", ["list", "--since", "yesterday"]),
    ("missing-table", ["missing", JOB]),
    ("missing-paths", ["missing", JOB, "--format", "paths"]),
    ("missing-csv", ["missing", JOB, "--format", "csv"]),
    ("missing-json", ["missing", JOB, "--format", "json"]),
    ("missing-errored", ["missing", JOB, "--reason", "errored", "--format", "json"]),
    ("missing-limit", ["missing", JOB, "-n", "1"]),
    ("history", ["history", JOB]),
    ("history-json", ["history", JOB, "--json"]),
    ("sql-table", ["sql", "SELECT job_id, status, expected, verified, pct_verified FROM job_summary"]),
    ("sql-csv", ["sql", "SELECT path, state, detail FROM outputs ORDER BY output_id", "--csv"]),
    ("sql-json", ["sql", "SELECT * FROM unverified_outputs", "--json"]),
    ("sql-write", ["sql", "DELETE FROM jobs"]),
    ("sql-bad", ["sql", "SELECT nope FROM jobs"]),
    ("resume-dry-run", ["resume", JOB, "--dry-run"]),
    ("resume-dry-run-json", ["resume", JOB, "--dry-run", "--json"]),
    ("resume-no-runtime", ["resume", JOB]),
    ("prune", ["prune", "{spec}", "--store", "{store}"]),
    ("submit-dry-run-local", ["submit", "{spec}", "--dry-run", "--runtime", "local", "--store", "{store}",
                              "--bundle-path", "{bundle_path}"]),
    ("submit-dry-run-k8s-json", ["submit", "{spec}", "--dry-run", "--runtime", "k8s", "--json"]),
    ("submit-dry-run-k8s-yaml", ["submit", "{spec}", "--dry-run", "--runtime", "k8s"]),
    ("unknown-job", ["status", "job-nope"]),
    ("cancel-partial", ["cancel", JOB]),
]


def test_sample_cli_output_is_unchanged(spec_dir, workdir):
    store = copy_tree(spec_dir / "sample" / "provenance", workdir / "prov")
    db = workdir / "ledger.db"
    fill = {"spec": str(spec_dir / "sample" / f"{JOB}.json"), "store": str(store),
            "bundle_path": str(ROOT / "scripts" / "example_model")}
    for index, (name, args) in enumerate(SAMPLE_STEPS):
        if name == "@finish":
            # The sample was submitted elsewhere without runtime coordinates: the first validate already
            # decided it (nothing to wait for). Were it still open, its runtime would report it finished.
            from jobledger.ledger import Ledger
            with Ledger(db) as ledger:
                if ledger.job(JOB)["status"] == "scheduled":
                    ledger.transition(JOB, "running", "golden: the runtime started it")
                    ledger.transition(JOB, "validating", "golden: the runtime finished it")
            continue
        args = [a.format(**fill) for a in args]
        result = cli("--db", db, *args, ok=None)
        check(f"sample/{index:02d}-{name}.txt", normalise(transcript(args, result), workdir, spec_dir))


# The first sync may see the worker still running; that line is timing, not behaviour.
_RUNNING_ONLY = re.compile(r"^job-\S+: scheduled → running\n", re.MULTILINE)
_VIA_RUNNING = re.compile(r"^(job-\S+): (?:scheduled|running)(?: → running)? → validating", re.MULTILINE)


def test_demo_output_is_unchanged(spec_dir, workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JOBLEDGER_REGISTRY", None)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--dir", str(workdir / "demo")],
                          env=env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = normalise(f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}", workdir, spec_dir)
    text = _VIA_RUNNING.sub(r"\1: scheduled → validating", _RUNNING_ONLY.sub("", text))
    check("demo.txt", text)
