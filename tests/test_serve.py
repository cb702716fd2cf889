"""`jobledger serve`: Datasette on a free loopback port, read-only, answering the canned queries
with the same rows as `jobledger sql`, with a title and description for every table and view."""
from __future__ import annotations

import html
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from helpers import cli
from processes import stop

from jobledger.ledger import Ledger

SAMPLE_JOB = "job-5a11e0c3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def validated_sample(db_path, sample_tree, spec_dir):
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    with Ledger(db_path) as ledger:
        ledger.transition(SAMPLE_JOB, "validating", "test: the job finished")
    cli("validate", SAMPLE_JOB, ok=(3,))
    shutil.rmtree(sample_tree / json.loads((spec_dir / "sample" / "truth.json").read_text())["verified"][0])
    cli("validate", "--force", SAMPLE_JOB, ok=(3,))  # one vanished output
    return db_path


@pytest.fixture
def served(validated_sample):
    port = free_port()
    env = {**os.environ, "JOBLEDGER_DB": str(validated_sample)}
    proc = subprocess.Popen([sys.executable, "-m", "jobledger.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            get_json(base + "/-/versions.json")
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"datasette did not start: {proc.stdout.read().decode(errors='replace')}")
            time.sleep(0.2)
    yield base
    stop(proc)


def test_canned_queries_answer_like_jobledger_sql(served, validated_sample):
    metadata = get_json(served + "/-/metadata.json")
    database = metadata["databases"]["ledger"]
    queries = database["queries"]
    assert set(queries) == {"missing_outputs", "vanished_outputs", "param_set_completion"}
    for name, query in queries.items():
        rows = get_json(f"{served}/ledger/{name}.json?" + urllib.parse.urlencode({"job_id": SAMPLE_JOB,
                                                                                  "_shape": "array"}))
        literal = query["sql"].replace(":job_id", f"'{SAMPLE_JOB}'")
        assert rows == json.loads(cli("sql", literal, "--json").stdout), name
        assert rows, f"{name} answered no rows for the sample job"
    missing = get_json(f"{served}/ledger/missing_outputs.json?job_id={SAMPLE_JOB}&_shape=array")
    assert sorted(r["reason"] for r in missing) == ["errored", "incomplete", "missing", "missing"]
    vanished = get_json(f"{served}/ledger/vanished_outputs.json?job_id={SAMPLE_JOB}&_shape=array")
    assert [(r["became"], r["state_now"]) for r in vanished] == [("missing", "missing")]


def test_every_table_and_view_has_a_title_and_description(served, validated_sample):
    conn = sqlite3.connect(validated_sample)
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                        "AND name NOT LIKE 'sqlite_%'")}
    conn.close()
    tables = get_json(served + "/-/metadata.json")["databases"]["ledger"]["tables"]
    assert names == set(tables)
    for name in names:
        assert tables[name]["title"] and len(tables[name]["description"]) > 20
        page = html.unescape(urllib.request.urlopen(f"{served}/ledger/{name}", timeout=10).read().decode())
        assert tables[name]["description"] in page and tables[name]["title"] in page


def test_the_ledger_cannot_be_written_through_datasette(served, validated_sample):
    before = validated_sample.read_bytes()
    url = f"{served}/ledger.json?" + urllib.parse.urlencode({"sql": "DELETE FROM jobs", "_shape": "array"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url, timeout=10)
    assert validated_sample.read_bytes() == before
    assert get_json(f"{served}/ledger/jobs.json?_shape=array")[0]["job_id"] == SAMPLE_JOB


def test_serve_without_datasette_or_ledger_is_a_one_line_error(db_path, tmp_path):
    env = {**os.environ, "JOBLEDGER_DB": str(tmp_path / "absent.db")}
    done = subprocess.run([sys.executable, "-m", "jobledger.cli", "serve"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1 and done.stderr == f"error: no ledger at {tmp_path / 'absent.db'}\n"
    cli("register", str(tmp_path / "nothing.json"), ok=(1,))  # creates the ledger file, no job
    env["JOBLEDGER_DB"] = str(db_path)
    code = ("import sys\nsys.modules['datasette'] = None\nfrom jobledger.cli import main\nmain(['serve'])\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: serve needs Datasette: pip install 'jobledger[serve]'\n"
