"""Shared fixtures: a fresh ledger per test, paths to the spec material, and Azurite."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The shared spec material sits beside the checkout (/work/main) or two levels up from a worktree (/work/wt/NAME).
SPEC_DIR = next((d / "shared" / "spec" for d in (ROOT.parent, ROOT.parent.parent) if (d / "shared" / "spec").is_dir()),
                ROOT.parent / "shared" / "spec")
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC_DIR.is_dir():
        pytest.fail(f"the shared spec material is missing at {SPEC_DIR}")
    return SPEC_DIR


@pytest.fixture(scope="session")
def golden(spec_dir) -> dict:
    return json.loads((spec_dir / "golden.json").read_text())


@pytest.fixture
def sample_tree(spec_dir, tmp_path) -> Path:
    """A writable copy of the worker-written sample result tree."""
    from helpers import copy_tree
    return copy_tree(spec_dir / "sample" / "provenance", tmp_path / "provenance")


@pytest.fixture
def db_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "ledger.db"
    monkeypatch.setenv("JOBLEDGER_DB", str(path))
    monkeypatch.delenv("JOBLEDGER_REGISTRY", raising=False)
    monkeypatch.delenv("JOBLEDGER_STORE", raising=False)
    return path


@pytest.fixture
def ledger(db_path):
    from jobledger.ledger import Ledger
    with Ledger(db_path) as led:
        yield led


@pytest.fixture(scope="session")
def azurite():
    """A real Azurite blob service on a free loopback port for the whole session."""
    from azurite import Azurite
    service = Azurite().start()
    yield service
    service.cleanup()


@pytest.fixture
def azure_conn(azurite, monkeypatch) -> str:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return azurite.connection_string


@pytest.fixture
def standin():
    """A fresh loopback Kubernetes API stand-in (tests/k8s_standin.py) for one test."""
    from k8s_standin import KubeStandIn
    server = KubeStandIn().start()
    yield server
    server.stop()
