"""A non-editable `pip install .` into a fresh virtualenv ships schema.sql, the report
templates and a working console script.

The nested venv must build on whatever interpreter runs the suite, including a fresh venv that has
only what `pip install -e ".[test]"` put there: it reaches the running environment's packages
(setuptools, wheel, click, ...) through a .pth file instead of the base interpreter's site-packages,
builds without network access (--no-build-isolation), and shows pip's own error when it fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _outer_package_dirs() -> list[str]:
    """The running interpreter's package directories, without any that would provide jobledger
    itself (the checkout, an editable install's source path): the nested venv must use its own copy."""
    candidates = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    candidates += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    dirs = []
    for path in dict.fromkeys(candidates):
        if path and Path(path).is_dir() and not (Path(path) / "jobledger").exists() \
                and not Path(path).resolve().is_relative_to(ROOT):
            dirs.append(path)
    return dirs


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    command = " ".join(map(str, cmd))
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def test_non_editable_install_carries_the_schema(tmp_path, spec_dir):
    # Copy the source so the build cannot see (or import from) the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".services", "*.egg-info", "build",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"),
                    symlinks=True)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_dir = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # Appended after the venv's own site-packages, so the installed jobledger comes first.
    (Path(site_dir) / "outer-environment.pth").write_text("\n".join(_outer_package_dirs()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["JOBLEDGER_DB"] = str(tmp_path / "ledger.db")
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", src],
        cwd=tmp_path, env=env)
    shutil.rmtree(src)  # the installed package must not depend on the source tree
    where = run([python, "-c", "import jobledger, pathlib; p = pathlib.Path(jobledger.__file__).parent; "
                 "print(p); print((p / 'schema.sql').is_file())"], cwd=tmp_path, env=env).stdout.split()
    assert str(env_dir) in where[0] and where[1] == "True"
    exe = env_dir / "bin" / "jobledger"
    done = run([exe, "register", spec_dir / "sample" / "job-5a11e0c3.json", "--store", tmp_path / "store"],
               cwd=tmp_path, env=env)
    assert "12 expected outputs" in done.stdout
    status = run([python, "-m", "jobledger", "status", "job-5a11e0c3"], cwd=tmp_path, env=env)
    assert "scheduled" in status.stdout
    report = run([exe, "report", "job-5a11e0c3", "-o", "r.html"], cwd=tmp_path, env=env)
    assert report.stdout.startswith("wrote r.html (")
    assert (tmp_path / "r.html").read_text().count('<td data-state="unchecked"') == 12  # never validated
