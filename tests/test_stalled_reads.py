"""Faults: a deep read that stalls (issue 9). ``validate --deep`` gives up on an output whose read
outlasts ``--read-timeout`` (errored, with what stalled), classifies the others as usual, decides
the job, and the process ends although the stalled read never returns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import cli
from jobledger.ledger import Ledger
from jobledger.stores.local import LocalStore

JOB = "job-5a11e0c3"
ROOT = Path(__file__).resolve().parent.parent


def outputs(db: Path) -> dict[str, tuple[str, str | None]]:
    with Ledger(db) as ledger:
        rows = ledger.query("SELECT path, state, detail FROM outputs")
    return {r["path"]: (r["state"], r["detail"]) for r in rows}


def to_validating(db: Path) -> None:
    with Ledger(db) as ledger:
        for status in ("running", "validating"):
            ledger.transition(JOB, status, "test")


@pytest.fixture
def deep_baseline(db_path, spec_dir, sample_tree):
    """The sample job validated --deep --checksums once with nothing stalling: (states, a verified output)."""
    cli("register", spec_dir / "sample" / f"{JOB}.json", "--store", sample_tree)
    to_validating(db_path)
    cli("validate", JOB, "--deep", "--checksums", ok=(3,))
    states = outputs(db_path)
    victim = next(path for path, (state, _) in sorted(states.items())
                  if state == "verified" and any((sample_tree / path).glob("artifact_*")))
    return states, victim


@pytest.fixture
def released():
    """Set at the end of the test, so the reads it stalled end and their threads with them."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("stalls", ["result.json", "metadata.json", "artifact_"])
def test_a_stalled_read_errors_its_output_and_the_others_are_still_read(db_path, deep_baseline, released,
                                                                         monkeypatch, stalls):
    states, victim = deep_baseline
    original = LocalStore.chunks

    def chunks(self, path, limit=None):
        pieces = original(self, path, limit)
        if path.startswith(f"{victim}/{stalls}"):
            yield next(pieces)  # the first chunk comes, the next never does
            released.wait(30)  # a stall, longer than the test may take
        yield from pieces

    monkeypatch.setattr(LocalStore, "chunks", chunks)
    started = time.monotonic()
    result = cli("validate", JOB, "--force", "--deep", "--checksums", "--read-timeout", "0.5", "--json",
                 ok=(3,))
    assert time.monotonic() - started < 10
    name = f"{stalls}{'' if stalls.endswith('.json') else '*'}"
    state, detail = outputs(db_path)[victim]
    assert state == "errored"
    assert detail.startswith("reading ") and detail.endswith(" took longer than 0.5 s"), detail
    assert Path(detail.split()[1]).match(name), detail
    assert {p: s for p, (s, _) in outputs(db_path).items()} == {**{p: s for p, (s, _) in states.items()},
                                                                 victim: "errored"}
    doc = json.loads(result.stdout)
    assert doc["errored"] == sum(s == "errored" for s, _ in states.values()) + 1


def test_a_slow_artifact_that_keeps_coming_is_not_a_stall(db_path, deep_baseline, monkeypatch):
    """The clock restarts at every chunk: an artifact whose whole read takes 1.2 s, 0.3 s a chunk, passes a
    0.5 s limit."""
    states, victim = deep_baseline
    original = LocalStore.chunks

    def chunks(self, path, limit=None):
        if not path.startswith(f"{victim}/artifact_"):
            yield from original(self, path, limit)
            return
        data = b"".join(original(self, path, limit))
        for i in range(4):
            time.sleep(0.3)
            yield data[i * len(data) // 4:(i + 1) * len(data) // 4]

    monkeypatch.setattr(LocalStore, "chunks", chunks)
    cli("validate", JOB, "--force", "--deep", "--checksums", "--read-timeout", "0.5", ok=(3,))
    assert outputs(db_path)[victim][0] == "verified"
    assert {p: s for p, (s, _) in outputs(db_path).items()} == {p: s for p, (s, _) in states.items()}


def test_a_check_that_fails_still_fails_the_validation(db_path, deep_baseline, monkeypatch):
    """An error other than a stall (a store that fails) still stops validation with one line, as before."""
    from jobledger.stores import StoreError

    def chunks(self, path, limit=None):
        raise StoreError("cannot read: the store broke")
        yield b""

    monkeypatch.setattr(LocalStore, "chunks", chunks)
    result = cli("validate", JOB, "--force", "--deep", ok=(1,))
    assert result.stderr.strip() == "error: cannot read: the store broke"


def sample_job_on_azurite(db_path, spec_dir, sample_tree) -> str:
    """The sample job registered on a fresh Azurite container and moved to validating; returns the first
    output with a result.json and no error (the one the tests below stall)."""
    from jobledger.stores import open_store
    url = f"az://stall-{uuid.uuid4().hex[:12]}/workers"
    open_store(url).upload_tree(sample_tree)
    cli("register", spec_dir / "sample" / f"{JOB}.json", "--store", url)
    to_validating(db_path)
    return next(p for p in sorted(outputs(db_path)) if (sample_tree / p / "result.json").is_file()
                and not (sample_tree / p / "error_details.arrow").exists())


def test_a_blob_download_that_never_answers_on_azurite(db_path, spec_dir, sample_tree, azure_conn, azurite):
    """A real stall: a proxy in front of Azurite holds one output's result.json download forever (the
    socket stays open, no byte comes back). The CLI, in its own process, decides the job and exits soon
    after the limit; without daemon readers it would wait for the stuck one (the SDK's own read timeout is
    30 s, with retries)."""
    from delay_proxy import DelayProxy

    victim = sample_job_on_azurite(db_path, spec_dir, sample_tree)
    with DelayProxy("127.0.0.1", azurite.port, stall=f"/{victim}/result.json".encode()) as proxy:
        env = {**os.environ, "JOBLEDGER_DB": str(db_path), "PYTHONPATH": str(ROOT),
               "AZURE_STORAGE_CONNECTION_STRING": azure_conn.replace(f":{azurite.port}/", f":{proxy.port}/")}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "jobledger.cli", "validate", JOB, "--deep",
                               "--read-timeout", "2", "--json"], env=env, capture_output=True, text=True,
                              timeout=120)
        took = time.monotonic() - started
        stalled = proxy.stalled
    assert took < 15, took  # 2 s limit, a second or two of work, and no wait for the stuck thread
    assert proc.returncode == 3, proc.stderr
    assert stalled == 1  # one download held (a process that waited for it saw the SDK retry it)
    doc = json.loads(proc.stdout)
    assert doc["status"] == "partial" and doc["validated"]
    found = outputs(db_path)
    assert found[victim] == ("errored", "reading result.json took longer than 2 s")
    others = {p: s for p, (s, _) in found.items() if p != victim}
    assert others and "verified" in others.values() and "unchecked" not in others.values()


def test_the_same_azure_job_without_a_stall_has_the_victim_verified(db_path, spec_dir, sample_tree,
                                                                    azure_conn):
    """The control for the test above: through no proxy, the same output is verified by --deep."""
    victim = sample_job_on_azurite(db_path, spec_dir, sample_tree)
    cli("validate", JOB, "--deep", "--read-timeout", "2", ok=(3,))
    assert outputs(db_path)[victim][0] == "verified"


@pytest.mark.parametrize("args, stalls", [([], "result.json"), (["--deep"], "metadata.json")])
def test_a_stalled_aggregation_read_leaves_that_aggregation_incomplete(db_path, spec_dir, released, monkeypatch,
                                                                       args, stalls):
    """Aggregation directories are read on every validation (their result.json names their inputs; under
    --deep their metadata.json too): a stalled read leaves that aggregation incomplete, saying what stalled,
    and the other aggregation and the simulations are decided as without the stall."""
    tree = spec_dir / "upstream" / "worker-job-c400000a"
    job_id = json.loads(cli("register", tree / "job-c400000a.json", "--store", tree / "provenance",
                            "--json").stdout)["job_id"]
    with Ledger(db_path) as ledger:
        ledger.transition(job_id, "validating", "test: the runner finished")
    cli("validate", job_id, *args)

    def rows() -> list[tuple]:
        with Ledger(db_path) as ledger:
            return [tuple(r) for r in ledger.conn.execute("SELECT output_id, state, detail FROM outputs")]
    before = rows()
    assert {state for _, state, _ in before} == {"verified"}
    victim = sorted(detail for _, _, detail in before if detail and detail.startswith("agg_"))[0]
    original = LocalStore.chunks

    def chunks(self, path, limit=None):
        if f"/{victim}/{stalls}" in path:
            released.wait(30)
        yield from original(self, path, limit)

    monkeypatch.setattr(LocalStore, "chunks", chunks)
    started = time.monotonic()
    result = json.loads(cli("validate", job_id, "--force", *args, "--read-timeout", "0.5", "--json",
                            ok=(3,)).stdout)
    assert time.monotonic() - started < 10
    changed = sorted(set(rows()) - set(before))
    assert [(state, detail) for _, state, detail in changed] == \
        [("incomplete", f"{victim}: reading {stalls} took longer than 0.5 s")]
    assert (result["verified"], result["incomplete"]) == (result["expected"] - 1, 1)
