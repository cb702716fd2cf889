"""Screenshots of jobledger reports, taken with the system's headless Chromium.

    python scripts/screenshot_report.py REPORT.html [REPORT.html ...] [-o DIR] [--max-height PX]
    python scripts/screenshot_report.py --sample [-o docs]    # the README picture

``--sample`` builds the report of the sample job in ../shared/spec/sample first: registered in a
throw-away ledger against a copy of its result tree, validated, one verified output deleted and
validated again (so the page shows a vanished output too).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from chromium_cdp import Chromium  # noqa: E402

SAMPLE = HERE.parent.parent / "shared" / "spec" / "sample"
SAMPLE_JOB = "job-5a11e0c3"


def jobledger(db: Path, *args: str, ok=(0,)) -> str:
    done = subprocess.run([sys.executable, "-m", "jobledger.cli", "--db", str(db), *args],
                          capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"jobledger {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def sample_report(workdir: Path) -> Path:
    """The sample job's report, built the way a user would: register, validate, lose an output, validate."""
    store = workdir / "provenance"
    shutil.copytree(SAMPLE / "provenance", store)
    for path in store.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    db = workdir / "ledger.db"
    jobledger(db, "register", str(SAMPLE / f"{SAMPLE_JOB}.json"), "--store", str(store))
    from jobledger.ledger import Ledger
    with Ledger(db) as ledger:
        ledger.transition(SAMPLE_JOB, "validating", "screenshot: the job finished")
    jobledger(db, "validate", SAMPLE_JOB, ok=(3,))
    truth = json.loads((SAMPLE / "truth.json").read_text())
    shutil.rmtree(store / truth["verified"][0])
    jobledger(db, "validate", "--force", SAMPLE_JOB, ok=(3,))
    page = workdir / f"{SAMPLE_JOB}.html"
    jobledger(db, "report", SAMPLE_JOB, "-o", str(page))
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="*", type=Path)
    parser.add_argument("--sample", action="store_true", help="screenshot the sample job's report")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), help="directory for the PNGs")
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--max-height", type=int, default=2400)
    args = parser.parse_args()
    if not args.reports and not args.sample:
        parser.error("give report files or --sample")
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jobledger-shots-") as tmp, Chromium(width=args.width) as browser:
        reports = list(args.reports) + ([sample_report(Path(tmp))] if args.sample else [])
        for report in reports:
            page = browser.open(report.resolve().as_uri())
            if page.errors:
                raise SystemExit(f"{report}: the page reported errors: {page.errors}")
            is_sample = args.sample and report.name == f"{SAMPLE_JOB}.html"
            name = "report-sample.png" if is_sample else report.stem + ".png"
            shot = page.screenshot(args.output / name, max_height=args.max_height)
            page.close()
            print(f"{shot} ({shot.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
