"""Hostile and clumsy input, per entry point: a one-line error (exit 1, or 2 for usage errors), no
traceback, and the ledger unchanged (its SQL dump compared before and after); paths never leave
the store, reads never follow a link out of it, and nothing reads without bound."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from helpers import cli
from jobledger.ledger import Ledger
from jobledger.paths import check_relative, unsafe_reason

SAMPLE_JOB = "job-5a11e0c3"
HEX = "ab" * 32


def dump(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def assert_refused(result, db: Path, before: list[str], codes=(1,), secret: str | None = None) -> None:
    assert result.exit_code in codes, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") or (result.exit_code == 2 and "Error" in result.stderr), \
        result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert dump(db) == before
    if secret:
        assert secret not in result.stderr and secret not in result.stdout


@pytest.fixture
def sample_spec(spec_dir) -> dict:
    return json.loads((spec_dir / "sample" / f"{SAMPLE_JOB}.json").read_text())


@pytest.fixture
def registered(db_path, spec_dir, tmp_path):
    """A ledger with the sample job registered (so 'unchanged' means more than 'still empty')."""
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", tmp_path / "store")
    return db_path


def write_spec(tmp_path: Path, doc, name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# ---------------------------------------------------------------- the containment check itself

@pytest.mark.parametrize("path", ["../x", "/etc", "a/../../b", "a//b", "a/./b", "", ".", "a/", "a\nb", "a\\b",
                                  "a\x00b", "a\x7fb", "x" * 1025, "a/" + "y" * 256])
def test_unsafe_relative_paths_are_refused(path):
    assert unsafe_reason(path) is not None
    with pytest.raises(Exception, match="must stay inside the store"):
        check_relative(path, "output path")


@pytest.mark.parametrize("path", ["token/v1/sims/ab/cd/params_1/seed_0", "a", "seed_-1", "x" * 255, "é/ü"])
def test_safe_relative_paths_pass(path):
    assert check_relative(path, "output path") == path


# ---------------------------------------------------------------- register

LAYOUTS = ["../{param_id}/{seed}", "/{param_id}/{seed}", "{param_id}/../../../{seed}", "{param_id[:0]}/{seed}",
           "{param_id}//{seed}", "{param_id}/./{seed}", "a\\b/{param_id}/{seed}", "{param_id}/{seed}/..",
           "{param_id}/{seed}\n", "{param_id}\x00/{seed}", "{param_id}/{seed[:0]}"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_register_refuses_layouts_that_leave_the_store(registered, spec_dir, tmp_path, layout):
    before = dump(registered)
    spec = json.loads((spec_dir / "sample" / f"{SAMPLE_JOB}.json").read_text())
    spec["job_id"] = "job-0000aaaa"
    result = cli("register", write_spec(tmp_path, spec), "--store", tmp_path / "store", "--layout", layout, ok=None)
    assert_refused(result, registered, before)


def spec_variants(sample: dict) -> dict[str, object]:
    task = sample["tasks"][0]
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    study = {"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{"beta": 0.5}],
             "n_replicates": 2}
    return {
        "bundle_ref escaping the store": {**sample, "job_id": "job-0000bbb1",
                                          "bundle_ref": f"x:../../../../@sha256:{HEX}",
                                          "tasks": [{**t, "bundle_ref": f"x:../../../../@sha256:{HEX}"}
                                                    for t in sample["tasks"]]},
        "bundle_ref with a newline": {**sample, "job_id": "job-0000bbb2", "bundle_ref": f"sha256:{HEX}\n"},
        "job_id with a trailing newline": {**sample, "job_id": "job-0000bbb3\n"},
        "entrypoint with a trailing newline": {**sample, "job_id": "job-0000bbb4",
                                               "tasks": [{**task, "entrypoint": task["entrypoint"] + "\n"}]},
        "int param of 5,000 digits": '{"job_type": "simulation", "job_id": "job-0000bbb5", "bundle_ref": "sha256:'
                                     + HEX + '", "tasks": [{"entrypoint": "m.x/s", "bundle_ref": "sha256:' + HEX
                                     + '", "params": {"param_id": "x", "params": {"n": ' + "9" * 5000
                                     + '}}, "seed": 1}]}',
        "JSON nested 100,000 deep": json.dumps({"job_id": "job-0000bbb6", "tasks": deep}) if False else
        '{"job_id": "job-0000bbb6", "tasks": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "study metadata is a list": {**study, "metadata": [1, 2]},
        "study metadata is a string": {**study, "metadata": "x"},
        "study with 10**12 tasks": {**study, "n_replicates": 10**12},
        "study target with a newline": {**study, "targets": ["models.t.T/prev\n"]},
        "top level is a list": [1],
        "empty file": "",
        "not UTF-8": None,
    }


@pytest.mark.parametrize("case", list(spec_variants({"tasks": [{"entrypoint": "e"}]})))
def test_register_refuses_hostile_specs_in_one_line(registered, sample_spec, tmp_path, case):
    doc = spec_variants(sample_spec)[case]
    path = tmp_path / "spec.json"
    if doc is None:
        path.write_bytes(b"\xff\xfe{\x00")
    else:
        write_spec(tmp_path, doc)
    before = dump(registered)
    result = cli("register", path, "--store", tmp_path / "store", "--bundle", f"sha256:{HEX}", ok=None)
    assert_refused(result, registered, before)


@pytest.mark.parametrize("field, value", [("job_type", {f"error: {i}": "x" * 10_000 for i in range(500)}),
                                          ("job_id", "job-" + "a" * 1_000_000),
                                          ("bundle_ref", "sha256:" + "\n".join(["error: boom"] * 10_000))])
def test_a_refused_value_is_quoted_cut_short(registered, sample_spec, tmp_path, field, value):
    """Found by scripts/fuzz_specs.py: the error quoted the whole value back (megabytes, and text that reads
    like more error lines). It is quoted as reprlib shortens it: one line of a few hundred characters."""
    before = dump(registered)
    result = cli("register", write_spec(tmp_path, {**sample_spec, field: value}), "--store", tmp_path / "store",
                 ok=None)
    assert_refused(result, registered, before)
    assert field in result.stderr and len(result.stderr) < 700, result.stderr[:700]


def test_a_tilde_naming_no_user_is_a_plain_name_not_a_traceback(registered, spec_dir, tmp_path, monkeypatch):
    """Found by scripts/fuzz_specs.py: pathlib's expanduser raises for ``~nosuchuser``; a shell leaves it as
    it is, and so does jobledger (a directory of that name, here under the working directory)."""
    monkeypatch.chdir(tmp_path)
    result = cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--job-id", "job-0000cccc",
                 "--store", "~nosuchuser-jl/store", "--json")
    assert json.loads(result.stdout)["job_id"] == "job-0000cccc"
    with Ledger(registered) as ledger:
        assert ledger.job("job-0000cccc")["store_url"] == str(tmp_path / "~nosuchuser-jl" / "store")
    missing = cli("--db", "~nosuchuser-jl/ledger.db", "list", ok=(1,))
    assert missing.stderr == "error: no ledger at ~nosuchuser-jl/ledger.db\n"
    cli("--db", "~nosuchuser-jl/ledger.db", "register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store",
        tmp_path / "store")
    assert (tmp_path / "~nosuchuser-jl" / "ledger.db").is_file()


def test_an_output_file_that_is_a_device_or_a_link_is_written_through_not_replaced(registered, tmp_path):
    """Found by hand: ``report -o /dev/full`` succeeded, by renaming a temp file over the device (as root);
    ``spec -o /dev/stdout`` replaced the /dev/stdout link with a file. A device, pipe or link is written
    through; a regular file is still replaced atomically."""
    import stat
    import threading
    full = tmp_path / "full"  # a /dev/full of the test's own, so that a regression replaces only this one
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    for command in (["spec", SAMPLE_JOB], ["report", SAMPLE_JOB]):
        result = cli(*command, "-o", full, ok=(1,))
        assert result.stderr == f"error: cannot write {full}: No space left on device\n"
        assert stat.S_ISCHR(os.stat(full).st_mode)
    pipe, received = tmp_path / "pipe", []
    os.mkfifo(pipe)
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()), daemon=True)
    reader.start()
    cli("spec", SAMPLE_JOB, "-o", pipe)
    reader.join(10)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode) and json.loads(received[0])["job_id"] == SAMPLE_JOB
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    cli("spec", SAMPLE_JOB, "-o", link)
    assert link.is_symlink() and json.loads(target.read_text())["job_id"] == SAMPLE_JOB
    (tmp_path / "adir").mkdir()
    (tmp_path / "dirlink").symlink_to(tmp_path / "adir")
    for out in (tmp_path / "adir", tmp_path / "dirlink"):  # a directory gets the page inside it, as cp does
        (tmp_path / "adir" / f"{SAMPLE_JOB}.html").unlink(missing_ok=True)
        result = cli("report", SAMPLE_JOB, "-o", out)
        assert result.stdout.startswith(f"wrote {out / f'{SAMPLE_JOB}.html'} ")
        assert (tmp_path / "adir" / f"{SAMPLE_JOB}.html").is_file()
        assert (tmp_path / "adir").is_dir() and (tmp_path / "dirlink").is_symlink()


@pytest.mark.parametrize("command", [["validate", SAMPLE_JOB, "--read-timeout"], ["sql", "SELECT 1", "--timeout"]])
def test_a_time_limit_of_nan_is_a_usage_error(registered, command):
    result = cli(*command, "nan", ok=(2,))
    assert "'nan' is not a number of seconds" in result.stderr


@pytest.mark.parametrize("value, says", [("lots", "JOBLEDGER_X='lots': not a whole number"),
                                         ("-5", "JOBLEDGER_X=-5: must be at least 1"), (" 1_000 ", None), ("", None)])
def test_a_whole_number_setting_from_the_environment(monkeypatch, value, says):
    from jobledger.limits import SettingError, env_int
    monkeypatch.setenv("JOBLEDGER_X", value)
    if says is None:
        assert env_int("JOBLEDGER_X", 7, minimum=1) == (1000 if value.strip() else 7)
    else:
        with pytest.raises(SettingError) as info:
            env_int("JOBLEDGER_X", 7, minimum=1)
        assert str(info.value) == says


@pytest.mark.parametrize("name, command", [
    ("JOBLEDGER_MAX_RESULT_BYTES", ["validate", SAMPLE_JOB, "--force", "--deep"]),
    ("JOBLEDGER_MAX_TASKS", ["register", "SPEC", "--job-id", "job-0000eeee", "--store", "STORE"])])
def test_a_setting_that_is_no_number_is_one_line_from_the_cli(registered, spec_dir, tmp_path, name, command):
    """Found by hand: these settings were read with int() (some when a module loaded): a traceback."""
    import subprocess
    import sys
    args = [str(spec_dir / "sample" / f"{SAMPLE_JOB}.json") if a == "SPEC" else str(tmp_path / "s") if a == "STORE"
            else a for a in command]
    env = {**os.environ, "JOBLEDGER_DB": str(registered), name: "lots",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    before = dump(registered)
    proc = subprocess.run([sys.executable, "-m", "jobledger", *args], env=env, capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (1, f"error: {name}='lots': not a whole number\n")
    assert dump(registered) == before


def test_register_refuses_a_job_id_option_with_a_newline(registered, spec_dir, tmp_path):
    before = dump(registered)
    result = cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--job-id", "job-0000cccc\n", "--store",
                 tmp_path / "store", ok=None)
    assert_refused(result, registered, before)


SAS = "sv=2022-11-02&ss=b&sig=SUPERSECRETSIG%3D"


@pytest.mark.parametrize("store", [f"https://acct.blob.core.windows.net/c/p?{SAS}", f"az://c/p?{SAS}",
                                   "https://user:SUPERSECRETSIG@acct.blob.core.windows.net/c/p"])
@pytest.mark.parametrize("command", ["register", "submit"])
def test_sas_store_urls_are_refused_everywhere_and_never_echoed(registered, spec_dir, tmp_path, store, command):
    before = dump(registered)
    spec = json.loads((spec_dir / "sample" / f"{SAMPLE_JOB}.json").read_text())
    spec["job_id"] = "job-0000dddd"
    result = cli(command, write_spec(tmp_path, spec), "--store", store, ok=None)
    assert_refused(result, registered, before, secret="SUPERSECRETSIG")
    assert "acct.blob.core.windows.net/c/p" in result.stderr or "az://c/p" in result.stderr


@pytest.mark.parametrize("registry", [f"az://job-registry?{SAS}", f"az://job-registry/p?{SAS}",
                                      f"https://acct.blob.core.windows.net/job-registry?{SAS}"])
def test_sas_registry_urls_are_refused_and_never_echoed(registered, tmp_path, registry):
    before = dump(registered)
    result = cli("--registry", registry, "pull", ok=None)
    assert_refused(result, registered, before, codes=(1, 2), secret="SUPERSECRETSIG")


@pytest.mark.parametrize("where", ["directory", "below a file"])
def test_db_option_that_cannot_be_a_ledger_is_one_line(tmp_path, where):
    target = tmp_path / "d"
    if where == "directory":
        target.mkdir()
    else:
        target.write_text("x")
        target = target / "ledger.db"
    result = cli("--db", target, "list", ok=None)
    assert result.exit_code in (1, 2) and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    result = cli("--db", target, "register", "nothing.json", ok=None)
    assert result.exit_code in (1, 2) and "Traceback" not in result.stderr


# ---------------------------------------------------------------- validate: links, special and huge files

def to_validating(db: Path, job_id: str) -> None:
    with Ledger(db) as ledger:
        for status in ("running", "validating"):
            ledger.transition(job_id, status, "test")


def first_output(db: Path) -> str:
    with Ledger(db) as ledger:
        return ledger.query("SELECT path FROM outputs WHERE job_id = ? AND state = 'missing' "
                            "ORDER BY output_id LIMIT 1", (SAMPLE_JOB,))[0]["path"]


@pytest.fixture
def sample_registered(db_path, spec_dir, sample_tree):
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    to_validating(db_path, SAMPLE_JOB)
    return db_path


def outputs_by_state(db: Path) -> dict[str, str]:
    with Ledger(db) as ledger:
        return {r["path"]: r["state"] for r in ledger.query("SELECT path, state FROM outputs")}


def verified_dirs(tree: Path) -> list[Path]:
    return sorted(p.parent for p in tree.rglob("result.json") if not (p.parent / "error_details.arrow").exists())


@pytest.mark.parametrize("strategy", ["list", "head"])
def test_a_result_directory_linking_out_of_the_store_is_not_verified(sample_registered, sample_tree, tmp_path,
                                                                     strategy):
    outside = tmp_path / "outside"
    good = verified_dirs(sample_tree)[0]
    victim = good.relative_to(sample_tree).as_posix()
    os.rename(good, outside)
    os.symlink(outside, sample_tree / victim)  # the expected directory is a link to a valid result elsewhere
    cli("validate", SAMPLE_JOB, "--strategy", strategy, ok=(3,))
    assert outputs_by_state(sample_registered)[victim] != "verified"


def test_a_top_level_link_to_another_tree_verifies_nothing(sample_registered, sample_tree, tmp_path):
    other = tmp_path / "other"
    os.rename(sample_tree / "token", other)
    os.symlink(other, sample_tree / "token")
    cli("validate", SAMPLE_JOB, "--strategy", "list", ok=(4,))
    assert set(outputs_by_state(sample_registered).values()) == {"missing"}
    cli("validate", SAMPLE_JOB, "--force", "--strategy", "head", ok=(4,))
    assert set(outputs_by_state(sample_registered).values()) == {"missing"}


@pytest.mark.parametrize("make", ["fifo", "dev-zero link", "sparse 1 GB", "link outside", "not an object",
                                  "a string", "null", "nested deep"])
def test_deep_reads_only_bounded_regular_files(sample_registered, sample_tree, tmp_path, make):
    directory = verified_dirs(sample_tree)[0]
    rel = directory.relative_to(sample_tree).as_posix()
    target = directory / ("metadata.json" if make in ("not an object", "a string", "null") else "result.json")
    target.unlink()
    if make == "fifo":
        os.mkfifo(target)
    elif make == "dev-zero link":
        os.symlink("/dev/zero", target)
    elif make == "sparse 1 GB":
        with open(target, "wb") as fh:
            fh.truncate(1 << 30)
    elif make == "link outside":
        (tmp_path / "r.json").write_text('{"outputs": {}}')
        os.symlink(tmp_path / "r.json", target)
    elif make == "nested deep":
        target.write_text("[" * 200_000 + "]" * 200_000)
    else:
        target.write_text({"not an object": "[1]", "a string": '"x"', "null": "null"}[make])
    if make in ("fifo", "dev-zero link", "link outside"):
        pass  # the listing does not show a link or a FIFO as result.json... unless it is a FIFO
    result = cli("validate", SAMPLE_JOB, "--deep", "--checksums", ok=(3,))
    assert "Traceback" not in result.stderr
    assert outputs_by_state(sample_registered)[rel] in ("errored", "incomplete")


def test_checksums_do_not_read_an_artifact_linking_outside(sample_registered, sample_tree, tmp_path):
    directory = verified_dirs(sample_tree)[0]
    rel = directory.relative_to(sample_tree).as_posix()
    artifact = next(directory.glob("artifact_*.arrow"))
    (tmp_path / "copy.arrow").write_bytes(artifact.read_bytes())
    artifact.unlink()
    os.symlink(tmp_path / "copy.arrow", artifact)
    cli("validate", SAMPLE_JOB, "--deep", "--checksums", ok=(3,))
    assert outputs_by_state(sample_registered)[rel] == "errored"


def test_non_utf8_and_control_character_names_in_the_store_are_ignored(sample_registered, sample_tree):
    parent = verified_dirs(sample_tree)[0].parent
    os.mkdir(os.path.join(os.fsencode(parent), b"seed_\xff"))
    (parent / "seed_\n1").mkdir()
    for d in (os.path.join(os.fsencode(parent), b"seed_\xff"), os.fsencode(parent / "seed_\n1")):
        with open(os.path.join(d, b"result.json"), "w") as fh:
            fh.write("{}")
    result = cli("validate", SAMPLE_JOB, "--strategy", "list", ok=(3,))
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- sql: bounded, interruptible, read-only

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def run_cli(*args, env_db: Path, **kwargs):
    import subprocess
    import sys
    env = {**os.environ, "JOBLEDGER_DB": str(env_db), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "jobledger.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_sql_stops_at_its_time_limit(registered):
    import time
    before = dump(registered)
    started = time.monotonic()
    result = cli("sql", ENDLESS, "--timeout", "1", ok=None)
    assert time.monotonic() - started < 10
    assert_refused(result, registered, before)
    assert "time limit" in result.stderr


def test_sql_honours_ctrl_c_at_once(registered):
    import signal
    import time
    proc = run_cli("sql", ENDLESS, "--timeout", "0", env_db=registered)
    # Inside the endless query, however slowly the command started (a fresh clone compiles every module
    # first; a fixed sleep sent the signal during the imports on a loaded machine): the ledger is open.
    deadline = time.monotonic() + 60
    while not opened(proc.pid, registered) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - sent < 3
    assert (proc.returncode, err.decode().strip().splitlines()[-1:]) == (130, ["interrupted"]), err.decode()


def opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (its /proc fd links)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == os.path.realpath(path)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.parametrize("query, leaves", [
    ("ATTACH DATABASE '{tmp}/other.db' AS o", "other.db"),
    ("VACUUM INTO '{tmp}/copy.db'", "copy.db"),
    ("PRAGMA writable_schema = ON", None),
    ("PRAGMA query_only = OFF", None),
    ("PRAGMA journal_mode = DELETE", None),
    ("PRAGMA wal_checkpoint(TRUNCATE)", None),
    ("DELETE FROM jobs", None),
    ("CREATE TABLE x (y)", None),
    ("DETACH DATABASE main", None),
])
def test_sql_cannot_write_attach_or_change_settings(registered, tmp_path, query, leaves):
    before = dump(registered)
    result = cli("sql", query.format(tmp=tmp_path), ok=None)
    assert_refused(result, registered, before)
    if leaves:
        assert not (tmp_path / leaves).exists()


def test_sql_still_reads_the_schema(registered):
    result = cli("sql", "PRAGMA table_info(jobs)", "--csv")
    assert "job_id" in result.stdout
    assert cli("sql", "PRAGMA user_version", "--csv").stdout.split()[1].isdigit()


def test_sql_streams_a_million_rows_in_bounded_memory(registered):
    """The rows were collected before printing: 3 million ended in MemoryError. Now the child's peak
    RSS (VmHWM, read just before the last rows) stays near the interpreter's own."""
    query = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) "
             "SELECT x, printf('%040d', x) AS pad FROM c")
    for fmt in ("--csv", "--json"):
        proc = run_cli("sql", query, fmt, env_db=registered)
        lines, peak_kb = 0, 0
        assert proc.stdout is not None
        for _ in proc.stdout:
            lines += 1
            if lines == 990_000:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        assert proc.wait() == 0
        assert lines >= 1_000_001
        assert 0 < peak_kb < 120 * 1024, peak_kb  # a million collected rows took several hundred MB


def counting(n: int) -> str:
    return f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"


@pytest.mark.parametrize("style", ["grid", "github", "html"])
def test_a_styled_table_over_its_row_cap_is_one_line_not_a_memory_error(registered, monkeypatch, style):
    """tabulate needs every row first: 3 million rows with --fmt grid ended in MemoryError. Over the cap it
    is one error line naming the streamed formats; at the cap the table prints."""
    from jobledger import render
    monkeypatch.setattr(render, "MAX_STYLED_ROWS", 50)
    before = dump(registered)
    result = cli("sql", counting(51), "--fmt", style, ok=None)
    assert_refused(result, registered, before)
    assert result.stderr == f"error: --fmt {style}: more than 50 rows; use the default table (streamed) " \
                            f"or --csv/--nl\n"
    assert result.stdout == ""
    shown = cli("sql", counting(50), "--fmt", style).stdout
    assert "50" in shown and "51" not in shown
    assert len(cli("sql", counting(51)).stdout.splitlines()) == 53  # the default table streams: no cap


def test_the_styled_table_cap_is_100000_rows_by_default(registered):
    result = cli("sql", counting(100_001), "--fmt", "grid", ok=(1,))
    assert result.stderr.strip() == ("error: --fmt grid: more than 100,000 rows; use the default table "
                                     "(streamed) or --csv/--nl")
    assert "at most 100,000 rows" in " ".join(cli("sql", "--help").stdout.split())


# ---------------------------------------------------------------- registry blobs from elsewhere

def pushed_registry(db: Path, registry: Path) -> None:
    cli("--registry", registry, "push")


def rewrite_blob(registry: Path, job_id: str, name: str, data: bytes) -> None:
    path = registry / "jobs" / job_id / name
    path.write_bytes(data)


def manifest_with(registry: Path, job_id: str, edit) -> bytes:
    import gzip
    text = gzip.decompress((registry / "jobs" / job_id / "manifest.jsonl.gz").read_bytes()).decode()
    header, *rows = text.split("\n")
    header_doc, row_docs = json.loads(header), [json.loads(r) for r in rows if r]
    header_doc, row_docs = edit(header_doc, row_docs)
    body = json.dumps(header_doc) + "\n" + "\n".join(json.dumps(r) if isinstance(r, list) else r for r in row_docs)
    return gzip.compress(body.encode())


def assert_pull_refused(registry: Path, job_id: str, tmp_path: Path, monkeypatch):
    """``pull job_id`` into a new, empty ledger is one error line and leaves that ledger unchanged."""
    fresh = tmp_path / "analyst.db"
    monkeypatch.setenv("JOBLEDGER_DB", str(fresh))
    Ledger(fresh).close()
    before = dump(fresh)
    result = cli("--registry", registry, "pull", job_id, ok=None)
    assert_refused(result, fresh, before)
    return result


def set_path(path):
    def edit(h, rows):
        rows[0][6] = path
        return h, rows
    return edit


MANIFEST_EDITS = {
    "absolute path": set_path("/etc"),
    "parent path": set_path("../../../tmp"),
    "path with a newline": set_path("a/b\n"),
    "path not text": set_path(7),
    "row too short": lambda h, rows: (h, [rows[0][:3]] + rows[1:]),
    "row not JSON": lambda h, rows: (h, ["{nope"] + rows[1:]),
    "param index out of range": lambda h, rows: (h, [[*rows[0][:2], 999, *rows[0][3:]]] + rows[1:]),
    "template index a string": lambda h, rows: (h, [[*rows[0][:3], "0", *rows[0][4:]]] + rows[1:]),
    "seed a float": lambda h, rows: (h, [[*rows[0][:4], 1.5, *rows[0][5:]]] + rows[1:]),
    # found by scripts/fuzz_specs.py: an OverflowError from the INSERT
    "seed below -2**63": lambda h, rows: (h, [[*rows[0][:4], -2**70, *rows[0][5:]]] + rows[1:]),
    "seed negative": lambda h, rows: (h, [[*rows[0][:4], -1, *rows[0][5:]]] + rows[1:]),
    "seed past 2**64": lambda h, rows: (h, [[*rows[0][:5], 2**64, *rows[0][6:]]] + rows[1:]),
    "seed digits past 2**64": lambda h, rows: (h, [[*rows[0][:5], str(2**64), *rows[0][6:]]] + rows[1:]),
    "header job a list": lambda h, rows: ({**h, "job": []}, rows),
    "header params malformed": lambda h, rows: ({**h, "params": [[1]]}, rows),
    "header count wrong": lambda h, rows: ({**h, "outputs": 3}, rows),
    "parent id a path": lambda h, rows: ({**h, "job": {**h["job"], "parent_job_id": "../x"}}, rows),
    # found by scripts/fuzz_specs.py (each was a traceback from the INSERT of the jobs row)
    "expected_total null": lambda h, rows: ({**h, "job": {**h["job"], "expected_total": None}}, rows),
    "created_at null": lambda h, rows: ({**h, "job": {**h["job"], "created_at": None}}, rows),
    "tasks_total past 64 bits": lambda h, rows: ({**h, "job": {**h["job"], "tasks_total": 2**70}}, rows),
    "tasks_total a float": lambda h, rows: ({**h, "job": {**h["job"], "tasks_total": 4.5}}, rows),
    "tasks_total true": lambda h, rows: ({**h, "job": {**h["job"], "tasks_total": True}}, rows),
    "layout a number": lambda h, rows: ({**h, "job": {**h["job"], "layout": 3}}, rows),
    "metadata not an object": lambda h, rows: ({**h, "job": {**h["job"], "metadata": "[1, 2]"}}, rows),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_pull_refuses_hand_made_manifests(registered, tmp_path, monkeypatch, case):
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)
    rewrite_blob(registry, SAMPLE_JOB, "manifest.jsonl.gz", manifest_with(registry, SAMPLE_JOB, MANIFEST_EDITS[case]))
    result = assert_pull_refused(registry, SAMPLE_JOB, tmp_path, monkeypatch)


def modelops_state(job_id: str, **fields) -> bytes:
    """A state.json as ModelOps writes it (no jobledger part), with ``fields`` changed."""
    from modelops_writer import from_dict
    doc = from_dict({"job_id": job_id, "status": "running", "created_at": "2026-01-01T00:00:00+00:00",
                     "updated_at": "2026-01-01T00:00:00+00:00", "k8s_name": job_id, "tasks_total": 4,
                     "tasks_completed": 0, "tasks_verified": 0, "validation_attempts": 0, "expected_outputs": [],
                     "verified_outputs": [], "missing_outputs": [], "metadata": {}})
    return json.dumps({**doc, **fields}).encode()


STATE_EDITS = {"tasks_total past 64 bits": {"tasks_total": 2**70}, "tasks_total negative": {"tasks_total": -1},
               "validation_attempts text": {"validation_attempts": "3"}, "created_at a number": {"created_at": 5},
               "k8s_name a list": {"k8s_name": ["x"]}, "tasks_completed a float": {"tasks_completed": 1.5}}


@pytest.mark.parametrize("case", list(STATE_EDITS))
def test_pull_refuses_a_modelops_state_with_fields_of_the_wrong_type(tmp_path, monkeypatch, case):
    registry, job_id = tmp_path / "registry", "job-0000beef"
    (registry / "jobs" / job_id).mkdir(parents=True)
    rewrite_blob(registry, job_id, "state.json", modelops_state(job_id, **STATE_EDITS[case]))
    result = assert_pull_refused(registry, job_id, tmp_path, monkeypatch)
    assert f"key {next(iter(STATE_EDITS[case]))!r}" in result.stderr


def test_pull_imports_a_modelops_state_without_timestamps(tmp_path, monkeypatch):
    """ModelOps always writes both; a job whose state lost them is still imported (created now)."""
    registry, job_id = tmp_path / "registry", "job-0000beef"
    (registry / "jobs" / job_id).mkdir(parents=True)
    rewrite_blob(registry, job_id, "state.json", modelops_state(job_id, created_at=None, updated_at=None))
    monkeypatch.setenv("JOBLEDGER_DB", str(tmp_path / "analyst.db"))
    cli("--registry", registry, "pull", job_id)
    with Ledger(tmp_path / "analyst.db") as ledger:
        job = ledger.job(job_id)
    assert job["status"] == "running" and job["created_at"] and job["updated_at"]


def test_pull_takes_a_manifest_seed_written_as_its_digits(registered, tmp_path, monkeypatch):
    """The digit form a seed may take (SQLite keeps seeds past 2**63 as text) is read back as the number."""
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)

    def seeds_as_text(h, rows):
        return h, [[*r[:4], None if r[4] is None else str(r[4]), None if r[5] is None else str(r[5]), r[6]]
                   for r in rows]
    rewrite_blob(registry, SAMPLE_JOB, "manifest.jsonl.gz", manifest_with(registry, SAMPLE_JOB, seeds_as_text))
    fresh = tmp_path / "analyst.db"
    monkeypatch.setenv("JOBLEDGER_DB", str(fresh))
    cli("--registry", registry, "pull", SAMPLE_JOB)
    query = "SELECT path, task_seed, run_seed FROM expected_outputs ORDER BY output_id"
    with Ledger(fresh) as theirs, Ledger(registered) as ours:
        assert theirs.query(query) == ours.query(query)


@pytest.mark.parametrize("blob", ["gzip bomb", "not gzip", "truncated", "outputs malformed", "event state bogus",
                                  "unexpected path escapes", "run index out of range", "nested deep"])
def test_pull_refuses_bad_observations(registered, tmp_path, monkeypatch, blob):
    import gzip
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)
    from jobledger.registry.blobs import OBSERVED_FORMAT, RUN_COLUMNS
    good = {"format": OBSERVED_FORMAT, "job_id": SAMPLE_JOB, "runs": [], "outputs": [], "events": [],
            "unexpected": []}
    base = {**good, "runs": [["2026-01-01T00:00:00Z"] + [None] * (len(RUN_COLUMNS) - 1)]}
    docs = {"outputs malformed": {**base, "outputs": [["x", "verified", None, None, None, None]]},
            "event state bogus": {**base, "events": [[0, 0, "missing", "bogus", None]]},
            "unexpected path escapes": {**base, "unexpected": [["../../etc", 0]]},
            "run index out of range": {**base, "outputs": [[0, "verified", None, 5, None, None]]}}
    if blob == "gzip bomb":
        data = gzip.compress(b"{" + b" " * (400 << 20) + b"}", 9)  # ~400 KB that inflate to 400 MB
    elif blob == "not gzip":
        data = b"plain text"
    elif blob == "truncated":
        data = gzip.compress(json.dumps(good).encode())[:-12]
    elif blob == "nested deep":
        data = gzip.compress(b"[" * 200_000 + b"]" * 200_000)
    else:
        data = gzip.compress(json.dumps(docs[blob]).encode())
    rewrite_blob(registry, SAMPLE_JOB, "observed.json.gz", data)
    result = assert_pull_refused(registry, SAMPLE_JOB, tmp_path, monkeypatch)


@pytest.mark.parametrize("name", ["hello", "has space", "job-" + "a" * 246, "job-0000abcd\n", "..", "job-0000ABCD"])
def test_pull_skips_registry_keys_that_are_not_job_ids(registered, tmp_path, monkeypatch, name):
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)
    good = registry / "jobs" / SAMPLE_JOB / "state.json"
    if name != "..":
        (registry / "jobs" / name).mkdir()
        (registry / "jobs" / name / "state.json").write_bytes(good.read_bytes())
    fresh = tmp_path / "analyst.db"
    monkeypatch.setenv("JOBLEDGER_DB", str(fresh))
    result = cli("--registry", registry, "pull", ok=None)
    assert "Traceback" not in result.stderr
    with Ledger(fresh) as ledger:
        assert [r["job_id"] for r in ledger.query("SELECT job_id FROM jobs")] == [SAMPLE_JOB]


def test_pull_needs_only_read_access_to_a_local_registry(registered, tmp_path, monkeypatch):
    """An analyst who may only read the shared directory can pull: no lock file has to be created.
    (The tests run as root, whom permission bits do not stop: immutable directories do.)"""
    import subprocess
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)
    for lock in registry.rglob(".*.lock"):
        lock.unlink()  # a registry whose lock files were never made here
    folders = [registry, *[p for p in registry.rglob("*") if p.is_dir()]]
    subprocess.run(["chattr", "+i", *map(str, folders)], check=True)
    try:
        with pytest.raises(PermissionError):
            (registry / "jobs" / ".probe").write_text("x")  # really read-only
        monkeypatch.setenv("JOBLEDGER_DB", str(tmp_path / "analyst.db"))
        result = cli("--registry", registry, "pull")
        assert "imported" in result.stdout
        with Ledger(tmp_path / "analyst.db") as ledger:
            assert ledger.job(SAMPLE_JOB)["expected_total"] == 12
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=True)
    assert not list(registry.rglob(".*.lock"))


def test_pull_of_two_jobs_naming_each_other_as_parent_ends(registered, spec_dir, tmp_path, monkeypatch):
    spec = json.loads((spec_dir / "sample" / f"{SAMPLE_JOB}.json").read_text())
    spec["job_id"] = "job-0000eeee"
    cli("register", write_spec(tmp_path, spec), "--store", tmp_path / "store")
    registry = tmp_path / "registry"
    pushed_registry(registered, registry)
    for job_id, parent in ((SAMPLE_JOB, "job-0000eeee"), ("job-0000eeee", SAMPLE_JOB)):
        edit = (lambda p: lambda h, rows: ({**h, "job": {**h["job"], "parent_job_id": p}}, rows))(parent)
        rewrite_blob(registry, job_id, "manifest.jsonl.gz", manifest_with(registry, job_id, edit))
    monkeypatch.setenv("JOBLEDGER_DB", str(tmp_path / "analyst.db"))
    result = cli("--registry", registry, "pull", ok=None)
    assert result.exit_code in (0, 1) and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 1
    with Ledger(tmp_path / "analyst.db") as ledger:
        assert ledger.conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_push_of_a_damaged_spec_is_one_line(registered, tmp_path):
    with Ledger(registered) as ledger:
        ledger.conn.execute("UPDATE job_specs SET spec_gz = x'1f8b0800' WHERE job_id = ?", (SAMPLE_JOB,))
    before = dump(registered)
    result = cli("--registry", tmp_path / "registry", "push", ok=None)
    assert_refused(result, registered, before)


def test_a_store_that_dies_during_head_validation_is_one_error_within_seconds(tmp_path, db_path, monkeypatch):
    """Azurite stopped while 16 threads probe 20,000 outputs: the first failure stops the others (it took
    348 s when every thread went through its own retries)."""
    import threading
    import time

    from azurite import Azurite
    service = Azurite().start()
    (tmp_path / "empty").mkdir()
    try:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", service.connection_string)
        from jobledger.stores import open_store
        open_store("az://prov/x").upload_tree(tmp_path / "empty")  # creates the container
        study = {"model": "models.seir.SEIR", "scenario": "baseline", "n_replicates": 5,
                 "parameter_sets": [{"beta": i} for i in range(4000)]}
        cli("register", write_spec(tmp_path, study), "--bundle", f"sha256:{HEX}", "--job-id", "job-0000ffff",
            "--store", "az://prov/x")
        to_validating(db_path, "job-0000ffff")
        before = dump(db_path)
        stopped_at: list[float] = []

        def stop_soon() -> None:
            time.sleep(1.0)
            stopped_at.append(time.monotonic())
            service.stop()

        threading.Thread(target=stop_soon, daemon=True).start()
        result = cli("validate", "job-0000ffff", "--strategy", "head", ok=None)
        ended = time.monotonic()
        assert stopped_at, "validation ended before the store was stopped"
        assert ended - stopped_at[0] < 15
        assert_refused(result, db_path, before)
    finally:
        service.cleanup()
