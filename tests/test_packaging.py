"""A non-editable `pip install .` into a fresh virtualenv ships schema.sql and a working console script."""
from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_non_editable_install_carries_the_schema(tmp_path, spec_dir):
    # Copy the source so the build cannot see (or import from) the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".services", "*.egg-info", "build",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"),
                    symlinks=True)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(src)],
                   check=True, cwd=tmp_path, capture_output=True)
    shutil.rmtree(src)  # the installed package must not depend on the source tree
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JOBLEDGER_DB"] = str(tmp_path / "ledger.db")
    where = subprocess.run([python, "-c", "import jobledger, pathlib; p = pathlib.Path(jobledger.__file__).parent; "
                            "print(p); print((p / 'schema.sql').is_file())"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.split()
    assert str(env_dir) in where[0] and where[1] == "True"
    exe = env_dir / "bin" / "jobledger"
    done = subprocess.run([exe, "register", str(spec_dir / "sample" / "job-5a11e0c3.json"), "--store",
                           str(tmp_path / "store")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "12 expected outputs" in done.stdout
