"""The local runtime: a detached worker process per job, writing to a local provenance store.

Everything about one run lives in ``<runs_dir>/<job_id>/`` (by default
``runs/<ledger file name>/`` beside the ledger, so two ledgers in one directory never share a
run directory): plan.json (the tasks, with the seeds the ledger expects), pid (pid and process
start time, so a recycled pid is never mistaken for the worker; host name and boot id, so only
the machine that started the worker, and only before it rebooted, judges it by its pid),
worker.log and, once the worker has finished, exit.json. The worker is started in its own
session, so it survives the command that started it and ``cancel`` can stop its whole process
group.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..contracts import SimJob
from .base import (
    ACTIVE,
    ELSEWHERE,
    FAILED,
    GONE,
    SUCCEEDED,
    Runtime,
    RuntimeFailure,
    RuntimeStatus,
    Submission,
)
from .worker import EXIT_FILE, LOG_FILE, PID_FILE, PLAN_FILE

HOST_ENV = "JOBLEDGER_HOST"  # overrides the host name (containers with random names; tests of two hosts)
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def runs_dir_for(ledger_path: str | os.PathLike) -> Path:
    """Where the local runtime keeps the runs of one ledger: ``runs/<ledger file name>/`` beside it."""
    ledger_path = Path(ledger_path)
    return ledger_path.parent / "runs" / ledger_path.name


def this_host() -> tuple[str, str | None]:
    """(host name, boot id): which machine this is, and which boot of it (None where unknown)."""
    try:
        boot_id = BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        boot_id = None
    return os.environ.get(HOST_ENV) or socket.gethostname(), boot_id


def local_store_root(store_url: str) -> Path:
    """The directory of a local store URL; the local runtime cannot write anywhere else."""
    if store_url.startswith("file://"):
        return Path(store_url[len("file://"):])
    if "://" in store_url:
        raise RuntimeFailure(f"the local runtime writes to a local store; {store_url} is not a directory "
                             f"(pass --store DIR)")
    return Path(store_url)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[0], int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it when this very process started it (tests, the demo)
    except ChildProcessError:
        pass
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        return (stat is not None and stat[0] not in ("Z", "X")
                and (start_time is None or stat[1] == start_time))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_running(run_dir: Path) -> int | None:
    """The pid of a live worker of ``run_dir``, found by its command line (``… -m jobledger.runtimes.worker
    RUN_DIR``): a worker whose pid the submit that started it did not live to record. None without one
    (or without /proc)."""
    wanted = [b"-m", b"jobledger.runtimes.worker", os.fsencode(run_dir)]
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[1:-1]
        except OSError:
            continue
        if args == wanted and process_alive(int(entry), None):
            return int(entry)
    return None


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self, runs_dir: str | os.PathLike | None = None,
                 bundle_path: str | os.PathLike | None = None, python: str | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.bundle_path = str(Path(bundle_path).resolve()) if bundle_path else None
        self.python = python or sys.executable

    def run_dir(self, job_id: str) -> Path:
        if self.runs_dir is None:
            raise RuntimeFailure("the local runtime needs a runs directory (the ledger's data directory)")
        return self.runs_dir / job_id

    def describe(self, job: SimJob, job_row: dict) -> dict:
        run_dir = self.run_dir(job.job_id)
        return {"runtime": "local", "run_dir": str(run_dir), "bundle_path": self.bundle_path,
                "store": str(local_store_root(job_row["store_url"])), "tasks": len(job.tasks),
                "command": [self.python, "-m", "jobledger.runtimes.worker", str(run_dir)]}

    def check(self, job: SimJob, job_row: dict) -> None:
        if self.bundle_path and not Path(self.bundle_path).is_dir():
            raise RuntimeFailure(f"--bundle-path {self.bundle_path} is not a directory")
        local_store_root(job_row["store_url"])
        run_dir = self.run_dir(job.job_id)
        if run_dir.exists() and not self._never_started(run_dir):  # refused before the job is written
            raise RuntimeFailure(f"{run_dir} already exists (left by an earlier run of {job.job_id} for a "
                                 f"ledger at this path): remove it, or submit under another --job-id")

    def submit(self, job: SimJob, job_row: dict, expected: list[dict]) -> Submission:
        self.check(job, job_row)
        store_root = local_store_root(job_row["store_url"])
        run_dir = self.run_dir(job.job_id)
        plan = {"job_id": job.job_id, "store_url": job_row["store_url"], "store_root": str(store_root),
                "layout": job_row["layout"], "bundle_path": self.bundle_path, "bundle_ref": job.bundle_ref,
                "targets": job.target_entrypoints,
                "tasks": [{"bundle_ref": r["bundle_ref"], "entrypoint": r["entrypoint"],
                           "param_id": r["param_id"], "params": json.loads(r["params_json"]),
                           "seed": int(r["run_seed"]),
                           "outputs": json.loads(r["outputs"]), "path": r["path"]} for r in expected]}
        process = None
        try:
            store_root.mkdir(parents=True, exist_ok=True)
            if run_dir.exists():  # what a submit killed before it started the worker left (see check)
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            (run_dir / PLAN_FILE).write_text(json.dumps(plan))
            with open(run_dir / LOG_FILE, "ab") as log:
                process = subprocess.Popen([self.python, "-m", "jobledger.runtimes.worker", str(run_dir)],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           cwd=run_dir, start_new_session=True, close_fds=True)
            stat = _proc_stat(process.pid)
            host, boot_id = this_host()
            ref = {"run_dir": str(run_dir), "pid": process.pid, "start_time": stat[1] if stat else None,
                   "bundle_path": self.bundle_path, "host": host, "boot_id": boot_id}
            (run_dir / PID_FILE).write_text(json.dumps(ref))
        except OSError as exc:
            if process is not None:
                _stop_group(process.pid)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise RuntimeFailure(f"cannot start the local worker for {job.job_id}: {exc}") from None
        process.returncode = 0  # detached on purpose: never waited for here, nothing to warn about
        return Submission(ref)

    def withdraw(self, job_row: dict) -> None:
        self.cancel(job_row)
        ref = self._ref(job_row)
        if ref.get("run_dir"):
            shutil.rmtree(ref["run_dir"], ignore_errors=True)

    def recover(self, job_row: dict) -> Submission | None:
        """The worker an interrupted submit started: its pid file is written right after the start. A submit
        killed between starting the worker and writing that file left a worker all the same: a finished one
        by its exit record (which holds its pid), a running one by its command line. None: no worker."""
        run_dir = self.run_dir(job_row["job_id"])
        try:
            return Submission(json.loads((run_dir / PID_FILE).read_text()))
        except (OSError, ValueError):
            pass
        try:
            pid = json.loads((run_dir / EXIT_FILE).read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            pid = worker_running(run_dir)
        if not isinstance(pid, int):
            return None
        try:
            bundle_path = json.loads((run_dir / PLAN_FILE).read_text()).get("bundle_path")
        except (OSError, ValueError, AttributeError):
            bundle_path = None
        stat = _proc_stat(pid)
        host, boot_id = this_host()
        return Submission({"run_dir": str(run_dir), "pid": pid, "start_time": stat[1] if stat else None,
                           "bundle_path": bundle_path, "host": host, "boot_id": boot_id})

    @staticmethod
    def _never_started(run_dir: Path) -> bool:
        """A run directory a submit killed before it started the worker left (plan.json at most): no pid
        file, no exit record, no worker running it. Such a submit ends ``failed`` (submit interrupted) and
        may be submitted again, into a fresh directory."""
        return not (run_dir / PID_FILE).exists() and not (run_dir / EXIT_FILE).exists() \
            and worker_running(run_dir) is None

    def status(self, job_rows: Iterable[dict]) -> dict[str, RuntimeStatus]:
        return {row["job_id"]: self._status(row) for row in job_rows}

    def _status(self, job_row: dict) -> RuntimeStatus:
        ref = self._ref(job_row)
        host, boot_id = this_host()
        if ref.get("host") and ref["host"] != host:
            # Another machine's run directory and pid: only that machine can tell whether its worker
            # runs. Judging it from here would call a running job gone and decide it too early.
            return RuntimeStatus(ELSEWHERE, "OtherHost", f"running on {ref['host']}")
        run_dir = Path(ref["run_dir"]) if ref.get("run_dir") else None
        if run_dir is None or not run_dir.is_dir():
            return RuntimeStatus(GONE, "RunDirectoryMissing", f"run directory {run_dir} is gone")
        exit_file = run_dir / EXIT_FILE
        if exit_file.exists():
            record = json.loads(exit_file.read_text())
            if record.get("returncode") == 0:
                return RuntimeStatus(SUCCEEDED, None,
                                     f"{record.get('ran', 0)} ran, {record.get('reused', 0)} "
                                     f"reused, {record.get('errored', 0)} errored")
            return RuntimeStatus(FAILED, "WorkerError",
                                 f"{record.get('error_type')}: {record.get('message')} "
                                 f"(see {run_dir / LOG_FILE})")
        if ref.get("boot_id") and boot_id and ref["boot_id"] != boot_id:
            # The machine rebooted since: the worker died with it, and its pid may name another process now.
            return RuntimeStatus(GONE, "HostRebooted", f"{host} rebooted since worker {ref['pid']} started "
                                                       f"(boot id changed); it left no exit record")
        if process_alive(ref["pid"], ref.get("start_time")):
            return RuntimeStatus(ACTIVE)
        if exit_file.exists():  # finished between the two checks
            return self._status(job_row)
        return RuntimeStatus(GONE, "WorkerVanished",
                             f"worker {ref['pid']} ended without an exit record (killed?)")

    def cancel(self, job_row: dict) -> None:
        ref = self._ref(job_row)
        host, boot_id = this_host()
        if ref.get("host") and ref["host"] != host:
            raise RuntimeFailure(f"{job_row['job_id']} runs on {ref['host']}, whose worker cannot be stopped "
                                 f"from {host}: run `jobledger cancel {job_row['job_id']}` on {ref['host']}")
        if ref.get("boot_id") and boot_id and ref["boot_id"] != boot_id:
            return  # the worker ended with the reboot; its pid may belong to someone else now
        if ref.get("pid") and process_alive(ref["pid"], ref.get("start_time")):
            _stop_group(ref["pid"])

    def logs(self, job_row: dict, *, follow: bool = False, tail: int | None = None,
             poll: float = 0.2) -> Iterator[str]:
        """The worker's log file (``<run dir>/log``); with ``follow``, read on until the worker has
        written its exit record (or is gone) and nothing more is in the file."""
        ref = self._ref(job_row)
        host, _ = this_host()
        if ref.get("host") and ref["host"] != host:
            raise RuntimeFailure(f"{job_row['job_id']} ran on {ref['host']}: its log is there, in "
                                 f"{ref.get('run_dir')}/{LOG_FILE}")
        run_dir = Path(ref["run_dir"]) if ref.get("run_dir") else self.run_dir(job_row["job_id"])
        try:
            handle = open(run_dir / LOG_FILE, "rb")
        except OSError as exc:
            raise RuntimeFailure(f"{job_row['job_id']}: no worker log at {run_dir / LOG_FILE} "
                                 f"({exc.strerror or exc})") from None
        with handle:
            if tail is not None:
                yield b"".join(collections.deque(handle, maxlen=tail)).decode("utf-8", "replace")
            while True:
                data = handle.read()
                if data:
                    yield data.decode("utf-8", "replace")
                    continue
                if not follow or (run_dir / EXIT_FILE).exists() or not self._worker_alive(ref):
                    last = handle.read()  # what came between the last read and the exit record
                    if last:
                        yield last.decode("utf-8", "replace")
                    return
                time.sleep(poll)

    @staticmethod
    def _worker_alive(ref: dict) -> bool:
        return bool(ref.get("pid")) and process_alive(ref["pid"], ref.get("start_time"))

    @staticmethod
    def _ref(job_row: dict) -> dict:
        return json.loads(job_row.get("runtime_ref") or "{}")


def _stop_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the worker's process group, SIGKILL it if it is still there after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid, None):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
