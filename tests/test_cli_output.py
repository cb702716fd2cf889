"""The CLI as people use it every day: one set of output options on every command that prints
rows (same rows in table, JSON, NDJSON, CSV and TSV), BLOBs, streaming, global options after
the command, usage errors, help, shell completion, the spec back, bundle digests, colour."""
from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from helpers import cli

from jobledger import render
from jobledger.cli import main
from jobledger.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
JOB = "job-5a11e0c3"
FORMATS = ("table", "json", "nl", "csv", "tsv")


@pytest.fixture
def ledger_with_jobs(db_path, spec_dir, sample_tree, golden, tmp_path):
    """The sample job validated to partial, and a second job waiting in validating."""
    cli("register", spec_dir / "sample" / f"{JOB}.json", "--store", sample_tree)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(golden["simjob_spec_example"]))
    cli("register", other, "--store", tmp_path / "empty-store")
    with Ledger(db_path) as ledger:
        for job_id in (JOB, "job-deadbeef"):
            ledger.transition(job_id, "running", "test: started")
            ledger.transition(job_id, "validating", "test: finished")
    cli("validate", JOB, ok=(3,))
    return db_path


def parse(fmt: str, text: str) -> list[dict]:
    """Rows printed in ``fmt`` as dicts of strings (None and absent as '')."""
    def text_of(value):
        return "" if value is None else (" → ".join(value) if isinstance(value, list) else str(value))
    if fmt == "json":
        return [{k: text_of(v) for k, v in row.items()} for row in json.loads(text)]
    if fmt == "nl":
        return [{k: text_of(v) for k, v in json.loads(line).items()} for line in text.splitlines()]
    if fmt in ("csv", "tsv"):
        return list(csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ","))
    lines = text.rstrip("\n").split("\n")
    starts = [m.start() for m in re.finditer(r"-+", lines[1])]
    ends = starts[1:] + [None]
    names = [lines[0][a:b].strip() for a, b in zip(starts, ends, strict=True)]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for line in lines[2:]]


ROW_COMMANDS = {
    "list": ["list"],
    "history": ["history", JOB],
    "missing": ["missing", JOB],
    "sql": ["sql",
            "SELECT job_id, status, expected, verified, pct_verified FROM job_summary ORDER BY job_id"],
    "sync": ["sync", "--dry-run"],
}


@pytest.mark.parametrize("name", sorted(ROW_COMMANDS))
def test_every_row_command_prints_the_same_rows_in_all_five_formats(ledger_with_jobs, name):
    printed = {fmt: parse(fmt, cli(*ROW_COMMANDS[name], f"--{fmt}").stdout) for fmt in FORMATS}
    assert printed["table"], printed
    for fmt in FORMATS:
        assert printed[fmt] == printed["table"], fmt
    default = cli(*ROW_COMMANDS[name]).stdout
    if name != "sync":  # sync's default is its change lines
        assert parse("table", default) == printed["table"]
    assert parse("table", cli(*ROW_COMMANDS[name], "--fmt", "simple").stdout) == printed["table"]
    github = cli(*ROW_COMMANDS[name], "--fmt", "github").stdout
    assert github.startswith("| ") and len(github.strip().splitlines()) == len(printed["table"]) + 2


def test_missing_has_every_column_in_every_format_and_format_is_an_alias(ledger_with_jobs):
    rows = json.loads(cli("missing", JOB, "--json").stdout)
    assert [r["reason"] for r in rows] == ["missing", "errored", "incomplete"]
    assert list(rows[0]) == ["path", "reason", "param_id", "seed", "task_id", "detail"]
    assert rows[1]["detail"] == "the worker wrote error_details.arrow"
    for fmt in FORMATS:
        assert cli("missing", JOB, "--format", fmt).stdout == cli("missing", JOB, f"--{fmt}").stdout
    assert cli("missing", JOB, "--format", "paths").stdout.split() == [r["path"] for r in rows]


def test_status_rows_are_its_param_sets(ledger_with_jobs):
    doc = json.loads(cli("status", JOB, "--json").stdout)
    sets = [{k: str(v) for k, v in s.items()} for s in doc["param_sets"]]
    for fmt in ("nl", "csv", "tsv"):
        assert parse(fmt, cli("status", JOB, f"--{fmt}").stdout) == sets
    assert "a6c4c8573bbb48e1  2/3" in cli("status", JOB).stdout


def test_blobs_print_as_sqlite_utils_prints_them(ledger_with_jobs, spec_dir):
    query = f"SELECT job_id, spec_gz FROM job_specs WHERE job_id = '{JOB}'"
    (row,) = json.loads(cli("sql", query, "--json").stdout)
    assert set(row["spec_gz"]) == {"$base64", "encoded"} and row["spec_gz"]["$base64"] is True
    blob = base64.b64decode(row["spec_gz"]["encoded"])
    assert json.loads(gzip.decompress(blob)) == json.loads((spec_dir / "sample" / f"{JOB}.json").read_text())
    assert json.loads(cli("sql", query, "--nl").stdout)["spec_gz"] == row["spec_gz"]
    assert parse("csv", cli("sql", query, "--csv").stdout)[0]["spec_gz"] == row["spec_gz"]["encoded"]
    assert parse("table", cli("sql", query).stdout)[0]["spec_gz"] == f"<binary: {len(blob):,} bytes>"


class FirstWrite(io.StringIO):
    """Records how many rows the source had handed out when the first line was written."""

    def __init__(self, counter: list[int]):
        super().__init__()
        self.counter, self.at_first_write = counter, None

    def write(self, text: str) -> int:
        if self.at_first_write is None:
            self.at_first_write = self.counter[0]
        return super().write(text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_are_written_as_they_come_not_after_reading_them_all(fmt):
    taken = [0]

    def rows():
        for i in range(5000):
            taken[0] += 1
            yield (f"token/v1/sims/{i:06d}", "missing", None, b"\x00\x01")

    out = FirstWrite(taken)
    assert render.output_rows(rows(), ["path", "reason", "detail", "blob"], fmt, out=out) == 5000
    assert out.at_first_write <= render.WIDTH_SAMPLE + 1, (fmt, out.at_first_write)
    assert parse(fmt, out.getvalue())[4999]["path"] == "token/v1/sims/004999"


def test_a_long_cell_after_the_width_sample_runs_over_and_keeps_its_row(tmp_path):
    out = io.StringIO()
    rows = [("a",)] * render.WIDTH_SAMPLE + [("a much longer value",)]
    render.output_rows(rows, ["x"], "table", out=out)
    assert out.getvalue().splitlines()[-1] == "a much longer value"


def test_db_and_registry_are_accepted_after_the_command_name(ledger_with_jobs, tmp_path, monkeypatch):
    monkeypatch.delenv("JOBLEDGER_DB")
    listed = CliRunnerish.run("list", "--db", ledger_with_jobs, "--json")
    assert {r["job_id"] for r in json.loads(listed)} == {JOB, "job-deadbeef"}
    assert CliRunnerish.run("--db", ledger_with_jobs, "path") == CliRunnerish.run("path", "--db",
                                                                                  ledger_with_jobs)
    registry = f"file://{tmp_path / 'registry'}"
    pushed = json.loads(CliRunnerish.run("push", "--db", ledger_with_jobs, "--registry", registry, "--json"))
    assert {r["job_id"] for r in pushed} == {JOB, "job-deadbeef"}
    assert (tmp_path / "registry").is_dir()


class CliRunnerish:
    @staticmethod
    def run(*args) -> str:
        return cli(*args).stdout


@pytest.mark.parametrize("args", [
    ["list", "--status", "bogus"], ["list", "--since", "yesterday"], ["list", "-n", "0"],
    ["missing", JOB, "--reason", "bogus"], ["missing", JOB, "--format", "xml"], ["validate", JOB,
                                                                                 "--strategy", "x"],
    ["sync", "--interval", "soon", "--watch"], ["status"], ["list", "--no-such-option"], ["frobnicate"],
    ["sql", "SELECT 1", "--fmt", "nope"], ["sync", "--watch", "--csv"], ["sync", "--watch", "--dry-run"],
])
def test_usage_errors_are_one_line_and_exit_2(ledger_with_jobs, args):
    result = cli(*args, ok=(2,))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""


def test_help_is_whole_and_shows_defaults_environment_and_an_example():
    top = cli("--help").stdout
    commands = top[top.index("Commands:"):]
    assert "..." not in commands and "JOBLEDGER_DB" in top and "_JOBLEDGER_COMPLETE" in top
    assert len(commands.strip().splitlines()) == len(main.commands) + 1  # one line each, none wrapped
    for name, command in main.commands.items():
        text = cli(name, "--help").stdout
        assert re.search(r"  Examples:\n    jobledger .*\b" + name + r"\b", text), name
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.show_default and param.show_envvar, (name, param.name)
    assert "[env var: JOBLEDGER_RUNTIME; default: local]" in re.sub(r"\s+", " ", cli("submit",
                                                                                     "--help").stdout)
    assert "JOBLEDGER_STORE" in cli("register", "--help").stdout


def test_shell_completion_offers_job_ids_from_the_ledger(ledger_with_jobs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBLEDGER_DB": str(ledger_with_jobs),
           "_JOBLEDGER_COMPLETE": "bash_complete", "COMP_WORDS": "jobledger status job-5", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "jobledger"], env=env, capture_output=True, text=True).stdout
    assert out.split() == [f"plain,{JOB}"]
    env.update(COMP_WORDS="jobledger missing job-", COMP_CWORD="2")
    out = subprocess.run([sys.executable, "-m", "jobledger"], env=env, capture_output=True, text=True).stdout
    assert sorted(out.split()) == ["plain,job-5a11e0c3", "plain,job-deadbeef"]


def test_spec_gives_back_the_submitted_spec_byte_for_byte(db_path, spec_dir, tmp_path):
    sample = spec_dir / "sample" / f"{JOB}.json"
    preview = json.loads(cli("submit", sample, "--dry-run", "--runtime", "k8s", "--json").stdout)
    cli("register", sample, "--store", tmp_path / "store")
    text = cli("spec", JOB).stdout
    assert text == json.dumps(preview["spec"], indent=2) + "\n"
    assert list(json.loads(text)) == ["job_type", "job_id", "bundle_ref", "priority", "metadata", "tasks"]
    cli("spec", JOB, "-o", tmp_path / "back.json")
    assert (tmp_path / "back.json").read_text() == text
    again = json.loads(cli("submit", tmp_path / "back.json", "--dry-run", "--runtime", "k8s",
                           "--json").stdout)
    assert again["spec"] == preview["spec"]
    yaml_text = cli("submit", sample, "--dry-run", "--runtime", "k8s").stdout
    assert not re.search(r"[&*]id\d+", yaml_text) and yaml.safe_load(yaml_text)["spec"] == preview["spec"]
    assert cli("spec", "job-nope", ok=(1,)).stderr.startswith("error: unknown job id")


def test_bundle_path_without_bundle_derives_a_stable_content_digest(db_path, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(ROOT / "scripts" / "example_model", model, ignore=shutil.ignore_patterns("__pycache__"))
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"model": "models.sir", "scenario": "baseline",
                                 "parameter_sets": [{"beta": 0.3}],
                                 "n_replicates": 1, "outputs": ["incidence"]}))
    first = json.loads(cli("submit", study, "--bundle-path", model, "--dry-run", "--json").stdout)["spec"]
    elsewhere = tmp_path / "copy" / "of" / "model"
    shutil.copytree(model, elsewhere)
    (elsewhere / "__pycache__").mkdir(exist_ok=True)
    (elsewhere / "__pycache__" / "sir.cpython-311.pyc").write_bytes(b"compiled here")
    second = json.loads(cli("submit", study, "--bundle-path", elsewhere, "--dry-run",
                            "--json").stdout)["spec"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first["bundle_ref"]) and second == first
    source = elsewhere / "models" / "sir.py"
    source.write_text(source.read_text() + "\n# changed\n")
    third = json.loads(cli("submit", study, "--bundle-path", elsewhere, "--dry-run", "--json").stdout)["spec"]
    assert third["bundle_ref"] != first["bundle_ref"]
    done = cli("submit", study, "--bundle-path", model, "--store", tmp_path / "store", "--json")
    assert done.stderr.startswith(f"bundle {first['bundle_ref']} (content digest of {model})")
    assert json.loads(done.stdout)["bundle_ref"] == first["bundle_ref"]
    assert json.loads(cli("spec", first["job_id"]).stdout)["bundle_ref"] == first["bundle_ref"]


def run_on_terminal(args: list, env: dict) -> tuple[str, str, int]:
    """Run the CLI with stdout and stderr on pseudo-terminals; returns (stdout, stderr, exit code)."""
    out_master, out_slave = pty.openpty()
    err_master, err_slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "jobledger", *map(str, args)], env=env, stdout=out_slave,
                            stderr=err_slave, stdin=subprocess.DEVNULL)
    os.close(out_slave)
    os.close(err_slave)
    chunks = {out_master: b"", err_master: b""}
    open_fds = set(chunks)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 30)
        if not ready:
            break
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                chunks[fd] += data
            else:
                open_fds.discard(fd)
    code = proc.wait(30)
    return chunks[out_master].decode(), chunks[err_master].decode(), code


def test_colour_and_progress_only_on_a_terminal_and_never_with_no_color(ledger_with_jobs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBLEDGER_DB": str(ledger_with_jobs)}
    env.pop("NO_COLOR", None)
    out, err, code = run_on_terminal(["validate", JOB, "--force"], env)
    assert code == 3 and "\x1b[33mpartial\x1b[0m" in out
    assert f"validating {JOB}" in err  # click's progress bar, on the terminal's stderr
    plain, _, _ = run_on_terminal(["list"], {**env, "NO_COLOR": "1"})
    assert "\x1b[" not in plain and "partial" in plain
    coloured, _, _ = run_on_terminal(["list"], env)
    assert "\x1b[33mpartial\x1b[0m" in coloured and "\x1b[36mvalidating\x1b[0m" in coloured
    piped = subprocess.run([sys.executable, "-m", "jobledger", "validate", JOB, "--force"], env=env,
                           capture_output=True, text=True)
    assert "\x1b[" not in piped.stdout and piped.stderr == ""
    _, err, code = run_on_terminal(["resume", JOB, "--dry-run"], env)
    counts = json.loads(subprocess.run([sys.executable, "-m", "jobledger", "status", JOB, "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    unverified = counts["expected"] - counts["verified"]
    assert code == 0 and f"planning resume of {JOB}" in err and f"{unverified}/{unverified}" in err, err
    _, err, code = run_on_terminal(["sync", "--dry-run"], env)
    assert code == 0 and "sync" in err and "1/1" in err  # one step per job looked at (job-deadbeef)
    study = ledger_with_jobs.parent / "big.json"
    study.write_text(json.dumps({"model": "models.sir", "scenario": "baseline", "n_replicates": 5,
                                 "parameter_sets": [{"beta": i / 1000} for i in range(1000)]}))
    _, err, code = run_on_terminal(["register", study, "--bundle", "sha256:" + "c" * 64, "--store",
                                    ledger_with_jobs.parent / "store"], env)
    assert code == 0 and "registering" in err and "5000/5000" in err
    model = ledger_with_jobs.parent / "model"
    shutil.copytree(ROOT / "scripts" / "example_model", model, ignore=shutil.ignore_patterns("__pycache__"))
    small = ledger_with_jobs.parent / "small.json"
    small.write_text(json.dumps({"model": "models.sir", "scenario": "baseline", "n_replicates": 2,
                                 "parameter_sets": [{"beta": b} for b in (0.1, 0.2, 0.3)],
                                 "outputs": ["incidence"]}))
    _, err, code = run_on_terminal(["submit", small, "--bundle-path", model, "--store",
                                    ledger_with_jobs.parent / "submitted"], env)
    assert code == 0 and "registering" in err and "6/6" in err, err
