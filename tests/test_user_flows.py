"""Every user flow ends in a right answer (issue 10): each test walks one flow a user tried,
through the CLI, from the first command to the answer they trust jobledger for."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli

SAMPLE_JOB = "job-5a11e0c3"
BUNDLE = "sha256:" + "5e" * 32
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "scripts" / "example_model"


# ------------------------------------------------------------------ helpers

def jl(db: Path, *args, registry: str | None = None, ok=(0,)):
    """The CLI on ledger ``db`` (and ``registry`` when given)."""
    return cli("--db", db, *(["--registry", registry] if registry else []), *args, ok=ok)


def status_doc(db: Path, job_id: str) -> dict:
    return json.loads(jl(db, "status", job_id, "--json").stdout)


def history(db: Path, job_id: str) -> list[tuple]:
    return [(h["from_status"], h["to_status"], h["reason"])
            for h in json.loads(jl(db, "history", job_id, "--json").stdout)]


def sql_rows(db: Path, query: str) -> list[dict]:
    return json.loads(jl(db, "sql", query, "--json").stdout)


def run_dir_ref(db: Path, job_id: str) -> str:
    return sql_rows(db, f"SELECT runtime_ref FROM jobs WHERE job_id = '{job_id}'")[0]["runtime_ref"]


def run_dir_of(db: Path, job_id: str) -> Path:
    return Path(json.loads(run_dir_ref(db, job_id))["run_dir"])


def wait_for_exit(db: Path, job_id: str, timeout: float = 90.0) -> dict:
    run_dir = run_dir_of(db, job_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "exit.json").exists():
            return json.loads((run_dir / "exit.json").read_text())
        time.sleep(0.05)
    raise AssertionError(f"worker of {job_id} did not finish: {(run_dir / 'worker.log').read_text()}")


def study(path: Path, model: str, scenario: str, parameter_sets: list[dict], n_replicates: int = 1) -> Path:
    path.write_text(json.dumps({"model": model, "scenario": scenario, "parameter_sets": parameter_sets,
                                "n_replicates": n_replicates, "outputs": ["incidence", "prevalence"]}))
    return path


def submit_local(db: Path, spec: Path, store: Path, bundle_path: Path, *extra,
                 registry: str | None = None) -> str:
    out = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", store, "--bundle-path",
             bundle_path, "--json", *extra, registry=registry)
    return json.loads(out.stdout)["job_id"]


@pytest.fixture
def seir_bundle(tmp_path) -> Path:
    """A bundle directory whose entrypoint is the sample job's `models.seir.StochasticSEIR/baseline`."""
    bundle = tmp_path / "seir-bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "__init__.py").write_text("")
    (bundle / "models" / "seir.py").write_text(
        "import json\n\n"
        "class StochasticSEIR:\n"
        "    @staticmethod\n"
        "    def baseline(params, seed):\n"
        "        days = int(params['n_days'])\n"
        "        return {'incidence': json.dumps([seed % 7] * days).encode(),\n"
        "                'prevalence': json.dumps([seed % 5] * days).encode()}\n")
    return bundle


@pytest.fixture
def truth(spec_dir) -> dict:
    return json.loads((spec_dir / "sample" / "truth.json").read_text())


@pytest.fixture
def sample_spec(spec_dir) -> Path:
    return spec_dir / "sample" / "job-5a11e0c3.json"


# ------------------------------------------------------------------ 1. jobs with no runtime

# ------------------------------------------------------------------ 2. two machines, one local worker

@pytest.fixture
def gated_bundle(tmp_path) -> Path:
    """A model that waits until the file named by params['gate'] exists."""
    bundle = tmp_path / "gated"
    (bundle / "gated").mkdir(parents=True)
    (bundle / "gated" / "__init__.py").write_text("")
    (bundle / "gated" / "model.py").write_text(
        "import os, time\n\n"
        "def wait(params, seed):\n"
        "    deadline = time.time() + 120\n"
        "    while not os.path.exists(params['gate']) and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return {'incidence': b'[1]', 'prevalence': b'[2]'}\n")
    return bundle


def test_2_a_worker_from_before_a_reboot_is_gone(tmp_path, gated_bundle, monkeypatch):
    """Same host name, another boot id: the recorded pid cannot be that worker any more, even when a
    process with that pid (and start time) is alive now."""
    from jobledger.runtimes.local import _proc_stat
    monkeypatch.setenv("JOBLEDGER_HOST", "alpha")
    db = tmp_path / "ledger.db"
    gate = tmp_path / "gate"
    gate.touch()
    spec = study(tmp_path / "study.json", "gated.model", "wait", [{"gate": str(gate)}])
    job_id = submit_local(db, spec, tmp_path / "store", gated_bundle)
    wait_for_exit(db, job_id)
    ref = json.loads(run_dir_ref(db, job_id))
    assert ref["host"] == "alpha"
    assert ref["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (Path(ref["run_dir"]) / "exit.json").unlink()  # the machine went down before the worker recorded its exit
    alive = {**ref, "pid": os.getpid(), "start_time": _proc_stat(os.getpid())[1]}  # a live process's pid

    def recorded(runtime_ref: dict) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE jobs SET runtime_ref = ? WHERE job_id = ?",
                         (json.dumps(runtime_ref), job_id))

    recorded(alive)  # in this boot, a live process with the recorded pid and start time is the worker
    assert jl(db, "sync").stdout.strip() == f"{job_id}: scheduled → running"
    recorded({**alive, "boot_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12})  # recorded before a reboot
    assert jl(db, "sync").stdout.strip() == f"{job_id}: running → validating → succeeded (1 verified)"
    assert "rebooted" in history(db, job_id)[-2][2]


# ------------------------------------------------------------------ 3. retries that give up

@pytest.fixture
def failing_bundle(tmp_path) -> Path:
    """``flaky.model/run``: raises, except for params['x'] == 5 once the file params['ok'] exists."""
    bundle = tmp_path / "flaky"
    (bundle / "flaky").mkdir(parents=True)
    (bundle / "flaky" / "__init__.py").write_text("")
    (bundle / "flaky" / "model.py").write_text(
        "import os\n\n"
        "def run(params, seed):\n"
        "    if params['x'] == 5 and os.path.exists(params['ok']):\n"
        "        return {'incidence': b'[1]', 'prevalence': b'[1]'}\n"
        "    raise RuntimeError(f\"boom {params['x']}\")\n")
    return bundle


# ------------------------------------------------------------------ 4. unchecked outputs

# ------------------------------------------------------------------ 5. two ledgers, one directory

def test_5_two_ledgers_in_one_directory_run_the_same_job(tmp_path):
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    job_a = submit_local(a, spec, tmp_path / "store-a", EXAMPLE_MODEL)
    job_b = submit_local(b, spec, tmp_path / "store-b", EXAMPLE_MODEL)
    assert job_a == job_b
    assert run_dir_of(a, job_a) != run_dir_of(b, job_b)
    assert wait_for_exit(a, job_a)["ran"] == 1 and wait_for_exit(b, job_b)["ran"] == 1
    for db in (a, b):
        line = jl(db, "sync").stdout.strip()
        assert line == f"{job_a}: scheduled → validating → succeeded (1 verified)"


def test_5_a_run_directory_left_from_an_earlier_ledger_is_refused_before_anything_is_written(tmp_path):
    spec = study(tmp_path / "study.json", "models.sir", "baseline", [{"beta": 0.3, "gamma": 0.1}])
    db = tmp_path / "ledger.db"
    job_id = submit_local(db, spec, tmp_path / "store", EXAMPLE_MODEL)
    run_dir = run_dir_of(db, job_id)
    wait_for_exit(db, job_id)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)  # the user starts a new ledger in the same place
    refused = jl(db, "submit", spec, "--bundle", BUNDLE, "--runtime", "local", "--store", tmp_path / "store",
                 "--bundle-path", EXAMPLE_MODEL, ok=(1,))
    assert str(run_dir) in refused.stderr
    assert sql_rows(db, "SELECT count(*) AS n FROM jobs")[0]["n"] == 0


# ------------------------------------------------------------------ 6. fixing a mis-registered job

# ------------------------------------------------------------------ 7. hints that lead somewhere

# ------------------------------------------------------------------ 8. jobs stuck in submitting

NS = "modelops-dask-dev"


@pytest.fixture
def standin():
    from k8s_standin import KubeStandIn
    server = KubeStandIn().start()
    yield server
    server.stop()


def _killed_mid_submit(db: Path, spec: Path, standin, *, created: bool, env: dict) -> str:
    """Run `jobledger submit --runtime k8s` as a real process and SIGKILL it while its create-Job
    request hangs (after the API server stored the Job when ``created``)."""
    release = standin.hold_next("POST", store_first=created)
    proc = subprocess.Popen([sys.executable, "-m", "jobledger", "--db", str(db), "submit", str(spec),
                             "--runtime", "k8s", "--store", "az://results/runs"], env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert standin.wait_held(timeout=60), proc.stderr.read() if proc.poll() is not None else "no request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        release()
    return json.loads(spec.read_text())["job_id"]


# ------------------------------------------------------------------ 9. tests and users need no PATH

def test_9_python_dash_m_jobledger_works_without_the_console_script_on_path(tmp_path, sample_spec):
    env = {**os.environ, "PATH": "/usr/bin:/bin", "JOBLEDGER_DB": str(tmp_path / "ledger.db")}
    done = subprocess.run([sys.executable, "-m", "jobledger", "register", str(sample_spec), "--store",
                           str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "12 expected outputs" in done.stdout
    version = subprocess.run([sys.executable, "-m", "jobledger", "--version"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "version" in version.stdout, version.stderr


def test_9_no_test_calls_the_console_script_by_name():
    """Subprocess CLI calls use `sys.executable -m jobledger`, so the suite passes without PATH."""
    by_name = re.compile(r"""(?:Popen|run|call|check_output)\(\s*\[\s*["']jobledger["']"""
                         r"""|which\(["']jobledger""")
    offenders = [f"{path.name}: {m.group(0)}" for path in sorted((ROOT / "tests").glob("*.py"))
                 for m in by_name.finditer(path.read_text())]
    assert offenders == []
