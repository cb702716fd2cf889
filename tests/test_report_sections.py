"""The report's header, parameter view and validation timeline, and the ledger page's counts, read in
headless Chromium and compared with the ledger (straight SQL, not the code under test)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from helpers import cli, copy_tree
from test_report import SAMPLE_JOB, WORKER_JOB, browser, load, write_report  # noqa: F401 (a fixture)

from jobledger.ledger import Ledger

SECTIONS = r"""(() => {
  const facts = {};
  for (const dt of document.querySelectorAll('#header dl.facts dt')) {
    facts[dt.textContent] = dt.nextElementSibling.textContent;
  }
  return {
    status: document.getElementById('job-status').textContent,
    pct: document.querySelector('[data-count="pct_verified"]').textContent,
    facts,
    charts: Array.from(document.querySelectorAll('#parameters figure.chart')).map(f => ({
      name: f.querySelector('h3').textContent,
      bars: Array.from(f.querySelectorAll('rect')).map(r => r.querySelector('title').textContent)})),
    constants: (Array.from(document.querySelectorAll('#parameters p.note')).pop() || {}).textContent,
    runs: Array.from(document.querySelectorAll('#runs tbody tr')).map(
      r => Array.from(r.cells).map(c => c.textContent)),
    points: (document.querySelector('#timeline polyline') || {points: []}).points.length,
    dots: Array.from(document.querySelectorAll('#timeline circle title')).map(t => t.textContent),
  };
})()"""


def query(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def shown(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) \
        else value


def expected_bars(db: Path, job_id: str, name: str) -> list[str]:
    """The parameter view's bar titles for ``name``, from the ledger: per value, verified/expected outputs
    (simulations and aggregations) and the parameter sets holding it."""
    rows = query(db, "SELECT json_extract(p.params_json, '$.' || ?) AS v, sum(o.state = 'verified'), "
                     "count(*), count(DISTINCT p.param_id) FROM outputs o JOIN params p USING (param_key) "
                     "WHERE o.job_id = ? GROUP BY v ORDER BY v", name, job_id)
    return [f"{name} = {shown(v)}: {ok:,}/{n:,} outputs verified ({100 * ok / n:.1f} %) "
            f"in {sets:,} param set{'s' if sets != 1 else ''}" for v, ok, n, sets in rows]


def assert_header_and_timeline(sections: dict, db: Path, job_id: str) -> None:
    (status, bundle, store, layout, policy, created, updated), = query(
        db, "SELECT status, bundle_ref, store_url, layout, seed_policy, created_at, updated_at FROM jobs "
            "WHERE job_id = ?", job_id)
    (pct,), = query(db, "SELECT pct_verified FROM job_summary WHERE job_id = ?", job_id)
    assert sections["status"] == status and sections["pct"] == f"{pct} %"
    facts = sections["facts"]
    assert (facts["bundle"], facts["store"]) == (bundle, store)
    assert facts["layout / seed policy"] == f"{layout} / {policy}"
    assert facts["created / updated"] == f"{created} / {updated}"
    runs = query(db, "SELECT run_id, started_at, strategy, requests, verified, missing, errored, incomplete, "
                     "unexpected, outcome FROM validation_runs WHERE job_id = ? ORDER BY run_id", job_id)
    last = runs[-1]
    assert facts["last validation"].startswith(f"run {last[0]} at ")
    assert f": {last[9]} — strategy {last[2]}, {last[3]:,} requests, " in facts["last validation"]
    assert sections["runs"] == [[str(v) for v in run] for run in runs]
    assert sections["points"] == len(runs) and len(sections["dots"]) == len(runs)
    for dot, run in zip(sections["dots"], runs, strict=True):
        (expected,), = query(db, "SELECT expected FROM validation_runs WHERE run_id = ?", run[0])
        assert dot.startswith(f"run {run[0]} at {run[1]}: {run[4]:,}/{expected:,} verified ({run[2]}, ")


def test_header_parameter_view_and_timeline_of_the_sample_job(browser, db_path, sample_tree,  # noqa: F811
                                                              spec_dir, tmp_path):
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    with Ledger(db_path) as ledger:
        ledger.transition(SAMPLE_JOB, "validating", "test: the job finished")
    cli("validate", SAMPLE_JOB, ok=(3,))
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    shutil.rmtree(sample_tree / truth["verified"][0])
    cli("validate", "--force", "--strategy", "head", SAMPLE_JOB, ok=(3,))  # a second run, another strategy

    page, _ = load(browser, write_report(SAMPLE_JOB, tmp_path / "sample.html"))
    sections = page.evaluate(SECTIONS)
    page.close()
    assert_header_and_timeline(sections, db_path, SAMPLE_JOB)
    assert len(sections["runs"]) == 2 and [r[2] for r in sections["runs"]] == ["scan", "head"]
    # Only beta varies across the sample's four parameter sets; each bar is one of its values.
    assert [c["name"] for c in sections["charts"]] == ["beta"]
    assert sections["charts"][0]["bars"] == expected_bars(db_path, SAMPLE_JOB, "beta")
    assert len(sections["charts"][0]["bars"]) == 4
    assert sections["constants"] == "The same in every parameter set: gamma = 0.05; model_name = seir; " \
                                    "n_days = 120."


def test_worker_job_sections_and_the_ledger_page_counts(browser, db_path, spec_dir, sample_tree,  # noqa: F811
                                                        tmp_path):
    """The job with aggregations (they count in the parameter view) and the sample job in one ledger:
    the ledger page's row per job shows the ledger's status and counts per state."""
    root = spec_dir / "upstream" / "worker-job-c400000a"
    cli("register", root / f"{WORKER_JOB}.json", "--store", copy_tree(root / "provenance", tmp_path / "w"))
    cli("register", spec_dir / "sample" / f"{SAMPLE_JOB}.json", "--store", sample_tree)
    with Ledger(db_path) as ledger:
        ledger.transition(WORKER_JOB, "validating", "test: the job finished")
        ledger.transition(SAMPLE_JOB, "validating", "test: the job finished")
    cli("validate", WORKER_JOB)
    cli("validate", SAMPLE_JOB, ok=(3,))  # four states
    cli("validate", "--force", "--deep", WORKER_JOB)

    page, _ = load(browser, write_report(WORKER_JOB, tmp_path / "worker.html"))
    sections = page.evaluate(SECTIONS)
    page.close()
    assert_header_and_timeline(sections, db_path, WORKER_JOB)
    assert [c["name"] for c in sections["charts"]] == ["beta"]
    assert sections["charts"][0]["bars"] == expected_bars(db_path, WORKER_JOB, "beta")
    assert sections["charts"][0]["bars"][0] == "beta = 0.3: 4/4 outputs verified (100.0 %) in 1 param set"

    index = tmp_path / "site" / "index.html"
    cli("report", "--ledger", "-o", index)
    page = browser.open(index.as_uri())
    shown_rows = page.evaluate(
        "(() => { const heads = Array.from(document.querySelectorAll('#jobs thead th'))"
        ".map(h => h.textContent.trim());"
        " return Array.from(document.querySelectorAll('tr.job-row')).map(r => Object.fromEntries("
        "Array.from(r.cells).map((c, i) => [heads[i], c.textContent.trim()]))); })()")
    assert page.errors == [] and page.external_requests == []
    page.close()
    assert [r["job"] for r in shown_rows] == [SAMPLE_JOB, WORKER_JOB]  # newest first
    for row in shown_rows:
        (status, expected, pct), = query(db_path, "SELECT status, expected, pct_verified FROM job_summary "
                                                  "WHERE job_id = ?", row["job"])
        counts = dict(query(db_path, "SELECT state, count(*) FROM outputs WHERE job_id = ? GROUP BY state",
                            row["job"]))
        assert (row["status"], row["expected"], row["% verified"]) == \
               (status, f"{expected:,}", "—" if pct is None else str(pct))
        for state in ("verified", "missing", "errored", "incomplete", "unchecked", "stale"):
            assert row[state] == f"{counts.get(state, 0):,}", (row["job"], state)
    (runs,), = query(db_path, "SELECT count(*) FROM validation_runs WHERE job_id = ?", WORKER_JOB)
    worker = next(r for r in shown_rows if r["job"] == WORKER_JOB)
    assert runs == 2 and worker["validations"] == f"verified over {runs} validation(s) {runs}"
