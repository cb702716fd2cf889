"""`jobledger report`: self-contained HTML pages loaded in a real headless Chromium, their DOM
checked against the ledger (cells per state, legend, resume tree, lists), no console errors
and no request leaving the file."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chromium_cdp import Chromium, chromium_binary
from helpers import cli
from synthetic_job import make_job
from test_local_runtime import submit_local, wait_for_exit

from jobledger import api
from jobledger.ledger import Ledger
from jobledger.registry import open_mirror

SAMPLE_JOB = "job-5a11e0c3"
WORKER_JOB = "job-c400000a"
KNOWN_STATES = ("verified", "missing", "errored", "incomplete", "unchecked", "stale")

# Everything the tests read from a report's DOM, in one evaluation.
PAGE_FACTS = r"""(() => {
  const map = document.getElementById('map');
  const heads = map ? Array.from(map.tHead.rows[0].cells) : [];
  const cells = Array.from(document.querySelectorAll('[data-state]'));
  const perState = {}, perAggState = {};
  let outside = 0;
  for (const c of cells) {
    if (c.tagName !== 'TD' || !map || !map.tBodies[0].contains(c)) { outside++; }
    const parts = c.dataset.counts ? c.dataset.counts.split(' ')
                                   : [c.dataset.state + ':' + (c.dataset.n || 1)];
    const agg = heads[c.cellIndex] && heads[c.cellIndex].classList.contains('agg');
    for (const p of parts) {
      const i = p.lastIndexOf(':'), state = p.slice(0, i), n = Number(p.slice(i + 1));
      perState[state] = (perState[state] || 0) + n;
      if (agg) { perAggState[state] = (perAggState[state] || 0) + n; }
    }
  }
  const depth = (n) => { let d = 0, p = n.parentElement.closest('.tree-node');
                         while (p) { d++; p = p.parentElement.closest('.tree-node'); } return d; };
  return {
    cells: cells.length, outside, perState, perAggState,
    binned: !!document.getElementById('binning'),
    rows: map ? map.tBodies[0].rows.length : 0,
    columns: heads.filter(h => h.classList.contains('col')).map(h => h.textContent),
    aggColumns: heads.filter(h => h.classList.contains('agg')).map(h => h.textContent),
    legend: Object.fromEntries(Array.from(document.querySelectorAll('#legend li'))
                               .map(li => [li.dataset.legend, li.textContent.trim()])),
    header: Object.fromEntries(Array.from(document.querySelectorAll('[data-count]'))
                               .map(b => [b.dataset.count, b.textContent])),
    tree: Array.from(document.querySelectorAll('.tree-node')).map(n => ({
      job: n.dataset.job, status: n.dataset.status, depth: depth(n),
      counts: n.querySelector('.tree-counts').textContent,
      over: (n.querySelector(':scope > .muted > .overcompute') || {}).textContent ?? null})),
    vanished: Array.from(document.querySelectorAll('#vanished td.path')).map(td => td.textContent),
    unexpected: Array.from(document.querySelectorAll('#unexpected td.path')).map(td => td.textContent),
    notVerified: Array.from(document.querySelectorAll('#not-verified-rows tbody tr')).length,
    scripts: Array.from(document.scripts).filter(s => !s.type).length,
  };
})()"""


@pytest.fixture(scope="module")
def browser():
    if not chromium_binary():
        pytest.fail("chromium is not installed: run scripts/install_services.sh")
    with Chromium() as chromium:
        yield chromium


@pytest.fixture
def sample_job(spec_dir) -> Path:
    return spec_dir / "sample" / f"{SAMPLE_JOB}.json"


def write_report(job_id: str, out: Path, *options) -> Path:
    result = cli("report", job_id, "-o", out, *options)
    assert result.stdout.startswith(f"wrote {out} (")
    return out


def load(browser, path: Path):
    """Open a report; it must load with no console error and no request beyond the file itself."""
    page = browser.open(path.resolve().as_uri())
    facts = page.evaluate(PAGE_FACTS)
    assert page.errors == []
    assert page.external_requests == []
    assert page.requests == [path.resolve().as_uri()]
    return page, facts


def ledger_counts(db: Path, job_id: str, kind: str | None = None) -> dict[str, int]:
    """Outputs per state, straight from the outputs table (not through the code under test)."""
    conn = sqlite3.connect(db)
    sql = ("SELECT state, count(*) FROM outputs WHERE job_id = ?" + (" AND kind = ?" if kind else "")
           + " GROUP BY state")
    counts = dict(conn.execute(sql, (job_id, kind) if kind else (job_id,)).fetchall())
    conn.close()
    return counts


def assert_map_matches_ledger(facts: dict, db: Path, job_id: str) -> None:
    counts = ledger_counts(db, job_id)
    assert facts["outside"] == 0  # only map cells carry data-state
    assert facts["perState"] == counts
    assert facts["perAggState"] == ledger_counts(db, job_id, "aggregation")
    assert set(KNOWN_STATES) <= set(facts["legend"])
    for state in facts["legend"]:
        assert facts["legend"][state] == f"{state} {counts.get(state, 0):,}"
        assert facts["header"][state] == f"{counts.get(state, 0):,}"
    assert facts["header"]["expected"] == f"{sum(counts.values()):,}"


def centre_of(page, selector: str) -> tuple[float, float]:
    element = f"document.querySelector({json.dumps(selector)})"
    page.evaluate(f"{element}.scrollIntoView({{block: 'center'}})")
    return tuple(page.evaluate(f"(() => {{ const r = {element}.getBoundingClientRect();"
                               f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()"))


def downloaded_csv(page) -> list[tuple]:
    path = page.download_by_click(*centre_of(page, "#csv-link"))
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == ["path", "reason", "param_id", "seed", "task_id", "detail"]
    return sorted(tuple(r) for r in rows[1:])


def ledger_unverified(db: Path, job_id: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT o.path, o.state, p.param_id, o.run_seed, o.task_id, o.detail FROM outputs o "
                        "JOIN params p ON p.param_key = o.param_key "
                        "WHERE o.job_id = ? AND o.state <> 'verified'", (job_id,)).fetchall()
    conn.close()
    return sorted(tuple("" if v is None else str(v) for v in r) for r in rows)


def wait_for_value(page, expression: str, timeout: float = 30):
    """The first truthy value of ``expression``: mouse moves reach the page's script asynchronously."""
    deadline = time.monotonic() + timeout
    while not (value := page.evaluate(expression)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def row_order(page) -> list[str]:
    return page.evaluate("Array.from(document.querySelectorAll('#map tbody tr'))"
                         ".map(r => r.cells[0].textContent)")


def click_sort(page, key: str) -> None:
    button = f"document.querySelector(\"#map button[data-sort='{key}']\")"
    before = page.evaluate(f"{button}.getAttribute('aria-sort')")
    page.click(*centre_of(page, f"#map button[data-sort='{key}']"))
    wait_for_value(page, f"{button}.getAttribute('aria-sort') !== {json.dumps(before)}")


# ------------------------------------------------------------------ the sample job

def test_sample_job_report(browser, db_path, sample_tree, spec_dir, tmp_path):
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    with Ledger(db_path) as ledger:
        ledger.transition(SAMPLE_JOB, "validating", "test: the job finished")
    cli("validate", SAMPLE_JOB, ok=(3,))
    gone = truth["verified"][0]
    shutil.rmtree(sample_tree / gone)  # verified, then gone
    cli("validate", "--force", SAMPLE_JOB, ok=(3,))
    # A hand-made child that re-runs one verified and one missing output (at their seeds): over-compute 1.
    spec = json.loads((spec_dir / "sample" / f"{SAMPLE_JOB}.json").read_text())
    conn = sqlite3.connect(db_path)
    redo = conn.execute("SELECT p.param_id, o.run_seed FROM outputs o JOIN params p USING (param_key) "
                        "WHERE o.path IN (?, ?)", (truth["verified"][1], truth["missing"][0])).fetchall()
    conn.close()
    tasks = [{**next(t for t in spec["tasks"] if t["params"]["param_id"] == pid), "seed": seed}
             for pid, seed in redo]
    with Ledger(db_path) as ledger:
        child, doc, fmt = api.prepare_job({**spec, "job_id": f"{SAMPLE_JOB}-r1", "tasks": tasks})
        api.create_job(ledger, child, doc, fmt, status="scheduled", reason="test: a child",
                       store=str(sample_tree), seed_policy="task", parent_job_id=SAMPLE_JOB)

    page, facts = load(browser, write_report(SAMPLE_JOB, tmp_path / "sample.html"))
    assert facts["cells"] == 12 and not facts["binned"] and facts["rows"] == 4
    assert facts["perState"] == {"verified": len(truth["verified"]) - 1, "missing": 2, "errored": 1,
                                 "incomplete": 1}
    assert_map_matches_ledger(facts, db_path, SAMPLE_JOB)
    assert facts["columns"] == ["0", "1", "2"] and facts["aggColumns"] == []
    assert facts["vanished"] == [gone]
    assert facts["unexpected"] == truth["unexpected"]
    assert facts["notVerified"] == 4 and facts["scripts"] == 1
    assert [(n["job"], n["status"], n["depth"], n["over"]) for n in facts["tree"]] == [
        (SAMPLE_JOB, "partial", 0, None), (f"{SAMPLE_JOB}-r1", "scheduled", 1, "1")]
    assert facts["tree"][0]["counts"] == "8/12 verified, 4 not"

    # Hover: every output's cell names its path, seed, task id and detail.
    titles = page.evaluate("Array.from(document.querySelectorAll('#map td[data-state]')).map(c => c.title)")
    conn = sqlite3.connect(db_path)
    outputs = conn.execute("SELECT path, run_seed, task_id, state, detail FROM outputs WHERE job_id = ? "
                           "ORDER BY output_id", (SAMPLE_JOB,)).fetchall()
    conn.close()
    for path, seed, task_id, state, detail in outputs:
        (title,) = [t for t in titles if t.startswith(path + "\n")]
        assert f"\nseed {seed}\n" in title and f"\ntask {task_id}\n" in title and f"\n{state}" in title
        assert detail is None or title.endswith(f"{state}: {detail}")

    # Sorting, by real clicks: completion, then beta both ways.
    registered = page.evaluate("Array.from(document.querySelectorAll('#map tbody tr')).map(r => "
                               "[r.cells[0].textContent, Number(r.dataset.c),"
                               " Number(r.cells[2].textContent)])")
    click_sort(page, "c")
    assert row_order(page) == [r[0] for r in sorted(registered, key=lambda r: r[1])]
    beta = page.evaluate("Array.from(document.querySelectorAll('#map thead button')).find(b => b.textContent"
                         " === 'beta').dataset.sort")
    click_sort(page, beta)
    assert row_order(page) == [r[0] for r in sorted(registered, key=lambda r: r[2])]
    click_sort(page, beta)
    assert row_order(page) == [r[0] for r in sorted(registered, key=lambda r: -r[2])]

    assert downloaded_csv(page) == ledger_unverified(db_path, SAMPLE_JOB)
    assert page.errors == [] and page.external_requests == []
    page.close()


# ------------------------------------------------------------------ aggregations

def test_worker_job_with_aggregations(browser, db_path, spec_dir, tmp_path):
    from helpers import copy_tree
    root = spec_dir / "upstream" / "worker-job-c400000a"
    store = copy_tree(root / "provenance", tmp_path / "provenance")
    cli("register", root / f"{WORKER_JOB}.json", "--store", store)
    with Ledger(db_path) as ledger:
        ledger.transition(WORKER_JOB, "validating", "test: the job finished")
    cli("validate", WORKER_JOB, ok=(0, 3, 4))
    page, facts = load(browser, write_report(WORKER_JOB, tmp_path / "worker.html"))
    assert_map_matches_ledger(facts, db_path, WORKER_JOB)
    conn = sqlite3.connect(db_path)
    (targets,) = conn.execute("SELECT count(DISTINCT t.entrypoint) FROM outputs o JOIN task_templates t "
                              "USING (template_id) WHERE o.job_id = ? AND o.kind = 'aggregation'",
                              (WORKER_JOB,)).fetchone()
    conn.close()
    assert targets == 1 and facts["aggColumns"] == ["targets.prev/loss"]
    assert facts["rows"] == 2 and facts["columns"] == ["0", "1", "2", "targets.prev/loss"]
    assert sum(facts["perAggState"].values()) == 2 and facts["cells"] == 8
    page.close()


# ------------------------------------------------------------------ a resume tree of two generations

FLAKY_MODEL = '''
import json, os


def run(params, seed):
    if os.path.exists(os.path.join(params["gates"], "fail-%d" % params["x"])):
        raise RuntimeError("gate closed for x=%d" % params["x"])
    return {"incidence": json.dumps([seed]).encode(), "prevalence": b"[]"}
'''


def test_resumed_job_with_two_generations_and_the_ledger_page(browser, db_path, tmp_path):
    bundle, gates, store = tmp_path / "bundle", tmp_path / "gates", tmp_path / "store"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "__init__.py").write_text("")
    (bundle / "models" / "flaky.py").write_text(FLAKY_MODEL)
    gates.mkdir()
    for x in (2, 3):
        (gates / f"fail-{x}").touch()
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"model": "models.flaky", "scenario": "run", "n_replicates": 2,
                                "outputs": ["incidence", "prevalence"],
                                "parameter_sets": [{"x": x, "gates": str(gates)} for x in (1, 2, 3)]}))
    root = submit_local(spec, store, bundle)
    wait_for_exit(db_path, root)
    assert cli("sync").stdout.strip() == f"{root}: scheduled → validating → partial (2 verified, 4 errored)"
    (gates / "fail-2").unlink()
    cli("resume", root)
    first = f"{root}-r1"
    wait_for_exit(db_path, first)
    assert cli("sync").stdout.strip() == f"{first}: scheduled → validating → partial (2 verified, 2 errored)"
    (gates / "fail-3").unlink()
    cli("resume", first)
    second = f"{root}-r2"
    wait_for_exit(db_path, second)
    assert cli("sync").stdout.strip() == f"{second}: scheduled → validating → succeeded (2 verified)"
    cli("validate", "--force", root)

    expected_tree = [(root, "succeeded", 0, "6/6 verified", None),
                     (first, "partial", 1, "2/4 verified, 2 not", "0"),
                     (second, "succeeded", 2, "2/2 verified", "0")]
    for job_id in (root, second):
        page, facts = load(browser, write_report(job_id, tmp_path / f"{job_id}.html"))
        tree = [(n["job"], n["status"], n["depth"], n["counts"], n["over"]) for n in facts["tree"]]
        assert tree == expected_tree
        assert page.evaluate("document.querySelector('.tree-node.current').dataset.job") == job_id
        assert_map_matches_ledger(facts, db_path, job_id)
        page.close()

    index = tmp_path / "site" / "index.html"
    out = cli("report", "--ledger", "-o", index).stdout
    assert out.startswith(f"wrote {index} (") and "3 job report(s) beside it" in out
    page = browser.open(index.as_uri())
    jobs = page.evaluate("Array.from(document.querySelectorAll('tr.job-row')).map(r => [r.dataset.job, "
                         "r.querySelector('a').getAttribute('href'), r.querySelectorAll('polyline').length])")
    assert page.errors == [] and page.external_requests == []
    assert sorted(j[0] for j in jobs) == sorted([root, first, second])
    for job_id, href, sparklines in jobs:
        assert href == f"{job_id}.html" and (index.parent / href).is_file() and sparklines == 1
    assert page.evaluate("document.querySelectorAll('[data-state]').length") == 0
    page.close()
    # The per-job pages written beside it link to each other through the tree.
    page, facts = load(browser, index.parent / f"{first}.html")
    links = page.evaluate("Array.from(document.querySelectorAll('.tree-node a'))"
                          ".map(a => a.getAttribute('href'))")
    assert sorted(links) == sorted([f"{root}.html", f"{second}.html"])
    page.close()


# ------------------------------------------------------------------ a big job: the map is binned

def test_synthetic_job_of_100000_outputs_is_binned(browser, db_path, tmp_path):
    job_id = make_job(db_path, 20_000, 4)  # 4 replicates and 1 aggregation per parameter set
    page, facts = load(browser, write_report(job_id, tmp_path / "big.html"))
    assert facts["binned"] and facts["cells"] <= 50_000 and facts["rows"] == 10_000
    assert facts["columns"] == ["0", "1", "2", "3", "targets.prev/loss"]
    assert_map_matches_ledger(facts, db_path, job_id)
    assert sum(facts["perState"].values()) == 100_000
    assert set(facts["perState"]) == {"verified", "missing", "errored", "incomplete", "unchecked", "stale"}
    conn = sqlite3.connect(db_path)
    (vanished,) = conn.execute("SELECT count(*) FROM output_events WHERE from_state = 'verified'").fetchone()
    conn.close()
    assert len(facts["vanished"]) == vanished > 0 and facts["notVerified"] == 1_000
    # Hovering a binned cell shows its counts (set by the page's script on the real mouse move).
    selector = "#map td[data-counts]"
    x, y = centre_of(page, selector)
    page.hover(x, y)
    title = wait_for_value(page, f"document.querySelector({json.dumps(selector)}).title")
    counts = page.evaluate(f"document.querySelector({json.dumps(selector)}).dataset.counts")
    assert title.startswith("param sets #") and title.endswith(counts.replace(" ", "\n").replace(":", ": "))
    assert downloaded_csv(page) == ledger_unverified(db_path, job_id)
    page.close()


def test_a_ragged_job_of_few_outputs_is_binned_by_its_cells(browser, db_path, tmp_path):
    """700 outputs, but one param set of 100 replicates beside 600 of one: 60,100 cells, so binned."""
    from jobledger.contracts import param_id_of
    bundle = "sha256:" + "ab" * 32

    def task(values: dict, seed: int) -> dict:
        return {"entrypoint": "models.sir/baseline", "bundle_ref": bundle, "seed": seed, "outputs": ["incidence"],
                "params": {"param_id": param_id_of(values), "values": values}}
    spec = tmp_path / "ragged.json"
    spec.write_text(json.dumps({"job_type": "simulation", "job_id": "job-0000aaaa", "bundle_ref": bundle,
                                "priority": 0, "metadata": {},
                                "tasks": [task({"x": 0}, s) for s in range(1, 101)]
                                + [task({"x": i}, 7) for i in range(1, 601)]}))
    cli("register", spec)
    page, facts = load(browser, write_report("job-0000aaaa", tmp_path / "ragged.html"))
    assert facts["binned"] and facts["rows"] == 301 and facts["cells"] == 400  # row 1: 100 cells, others 1
    assert_map_matches_ledger(facts, db_path, "job-0000aaaa")
    page.close()


# ------------------------------------------------------------------ offline, after pull

def test_report_after_pull_on_a_machine_that_never_saw_the_store(browser, tmp_path, sample_tree, spec_dir,
                                                                 monkeypatch):
    monkeypatch.delenv("JOBLEDGER_DB", raising=False)
    registry = f"file://{tmp_path / 'registry'}"
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    cli("--db", a, "--registry", registry, "register", spec_dir / "sample" / f"{SAMPLE_JOB}.json",
        "--store", sample_tree)
    with Ledger(a, mirror=open_mirror(registry)) as ledger:
        ledger.transition(SAMPLE_JOB, "validating", "test: the job finished")
    cli("--db", a, "--registry", registry, "validate", SAMPLE_JOB, ok=(3,))
    cli("--db", b, "--registry", registry, "pull")
    shutil.rmtree(sample_tree)
    out = tmp_path / "pulled.html"
    cli("--db", b, "report", SAMPLE_JOB, "-o", out)
    page, facts = load(browser, out)
    assert facts["perState"] == ledger_counts(a, SAMPLE_JOB) == {"verified": 9, "missing": 1, "errored": 1,
                                                                  "incomplete": 1}
    assert_map_matches_ledger(facts, b, SAMPLE_JOB)
    page.close()


# ------------------------------------------------------------------ untrusted text, unknown states

def test_markup_in_param_values_and_names_is_text(browser, db_path, tmp_path):
    payload = "<script>window.__pwned = 1</script>"
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"model": "models.sir", "scenario": "baseline", "n_replicates": 1,
                                "parameter_sets": [{"label": payload, "<img src=x onerror=alert(1)>": 1},
                                                   {"label": "plain", "<img src=x onerror=alert(1)>": 2}]}))
    job_id = json.loads(cli("register", spec, "--bundle", "sha256:" + "ab" * 32, "--json").stdout)["job_id"]
    page, facts = load(browser, write_report(job_id, tmp_path / "markup.html"))
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert facts["scripts"] == 1  # the page's own script only
    values = page.evaluate("Array.from(document.querySelectorAll('#map td.pv')).map(td => td.textContent)")
    assert payload in values
    assert "<img src=x onerror=alert(1)>" in page.evaluate("document.querySelector('#map thead').textContent")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in (tmp_path / "markup.html").read_text()
    page.close()


def test_a_state_this_version_does_not_know_is_shown_as_it_is(browser, db_path, sample_tree, spec_dir,
                                                               tmp_path):
    """A ledger written by a newer jobledger may hold output states this one has never heard of."""
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("INSERT INTO output_states (output_id, state) "
                 "SELECT output_id, 'quarantined' FROM manifest WHERE job_id = ? ORDER BY output_id LIMIT 2",
                 (SAMPLE_JOB,))
    conn.commit()
    conn.close()
    page, facts = load(browser, write_report(SAMPLE_JOB, tmp_path / "unknown.html"))
    assert facts["perState"] == {"unchecked": 10, "quarantined": 2}
    assert facts["legend"]["quarantined"] == "quarantined 2"
    assert_map_matches_ledger(facts, db_path, SAMPLE_JOB)
    page.close()


# ------------------------------------------------------------------ the harness and the command line

def test_the_harness_sees_requests_and_errors_a_page_makes(browser, tmp_path):
    """The checks above could fail: a page that fetches from a host and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://report-test.invalid/x.png"><script>console.error("boom"); '
                   'throw new Error("bad page")</script>')
    page = browser.open(bad.as_uri())
    time.sleep(0.2)
    page.evaluate("1")  # let queued events arrive
    assert page.external_requests == ["http://report-test.invalid/x.png"]
    assert any("boom" in e for e in page.errors) and any("bad page" in e for e in page.errors)
    page.close()


def test_report_errors_are_one_line_and_change_nothing(db_path, sample_job, tmp_path):
    cli("register", sample_job, "--store", tmp_path / "store")
    before = db_path.read_bytes()
    unknown = cli("report", "job-00000000", "-o", tmp_path / "x.html", ok=(1,))
    assert unknown.stderr == "error: unknown job id 'job-00000000'\n" and not (tmp_path / "x.html").exists()
    (tmp_path / "file").write_text("")
    blocked = cli("report", SAMPLE_JOB, "-o", tmp_path / "file" / "r.html", ok=(1,))
    assert blocked.stderr.startswith(f"error: cannot write {tmp_path / 'file' / 'r.html'}: ")
    assert blocked.stderr.count("\n") == 1
    usage = cli("report", ok=(2,)).stderr
    assert usage.startswith("error: give a JOB_ID or --ledger (not both)") and usage.count("\n") == 1
    assert cli("report", SAMPLE_JOB, "--ledger", ok=(2,)).exit_code == 2
    clash = cli("report", "--ledger", "-o", tmp_path / f"{SAMPLE_JOB}.html", ok=(1,))
    assert clash.stderr.startswith(f"error: {tmp_path / SAMPLE_JOB}.html would be overwritten by the report")
    assert db_path.read_bytes() == before


def test_open_hands_the_written_file_to_the_browser(db_path, sample_job, tmp_path):
    cli("register", sample_job, "--store", tmp_path / "store")
    record = tmp_path / "opened.txt"
    opener = tmp_path / "opener.py"
    opener.write_text(f"import sys\nopen({str(record)!r}, 'w').write(sys.argv[1])\n")
    env = {**os.environ, "JOBLEDGER_DB": str(db_path), "BROWSER": f"{sys.executable} {opener} %s"}
    done = subprocess.run([sys.executable, "-m", "jobledger.cli", "report", SAMPLE_JOB, "--open"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert record.read_text() == (tmp_path / f"{SAMPLE_JOB}.html").as_uri()


def test_an_output_that_names_a_directory_gets_the_default_file_name_inside_it(db_path, sample_job, tmp_path):
    cli("register", sample_job, "--store", tmp_path / "store")
    fresh = tmp_path / "reports"  # does not exist yet: the trailing '/' says it is a directory
    written = cli("report", SAMPLE_JOB, "-o", f"{fresh}/").stdout
    assert written.startswith(f"wrote {fresh / f'{SAMPLE_JOB}.html'} ") and (fresh / f"{SAMPLE_JOB}.html").is_file()
    assert not (tmp_path / "reports.html").exists()
    existing = tmp_path / "site"
    existing.mkdir()
    cli("report", "--ledger", "-o", existing)  # an existing directory, no slash
    assert (existing / "index.html").is_file() and (existing / f"{SAMPLE_JOB}.html").is_file()
