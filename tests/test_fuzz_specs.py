"""scripts/fuzz_specs.py runs the CLI on random malformed specs, layouts, store URLs and registry blobs
(hypothesis) and finds no traceback and no write outside its sandbox (a short run here; longer by hand)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_fuzz_run_finds_nothing():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_specs.py"), "--seconds", "12", "--seed", "7"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    tried = int(run.stdout.split("cases tried: ")[1].split()[0])
    assert tried >= 50 and "failures: 0" in run.stdout
