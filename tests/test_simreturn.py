"""SimReturn from stored results: wire-compatible classes, or modelops_contracts' own when importable."""
from __future__ import annotations

import hashlib
import sys
import textwrap

import pytest

from jobledger.contracts import sim_return_task_id
from jobledger.simreturn import INLINE_CAP, SimReturn, TableArtifact, contract_classes, sim_return_from_store
from jobledger.stores.local import LocalStore, write_result_dir

PID = "ab" * 32


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def test_small_artifacts_inline_big_ones_by_reference_errors_with_details(tmp_path):
    small, big = b"x" * 100, b"y" * (INLINE_CAP + 1)
    write_result_dir(tmp_path / "ok", bundle_ref="b", entrypoint="m.n/s", params={}, param_id=PID, seed=3,
                     outputs={"small": small, "big": big})
    got = sim_return_from_store(LocalStore(tmp_path), "ok")
    assert type(got) is SimReturn and contract_classes()[0] is SimReturn  # modelops_contracts is absent
    assert got.task_id == sim_return_task_id(PID, 3, ["big", "small"])
    assert got.error is None and not got.cached
    assert got.outputs["small"] == TableArtifact(size=100, inline=small, checksum=blake(small))
    assert got.outputs["big"] == TableArtifact(size=len(big), ref="ok/artifact_big.arrow",
                                               checksum=blake(big))

    write_result_dir(tmp_path / "bad", bundle_ref="b", entrypoint="m.n/s", params={}, param_id=PID, seed=4,
                     outputs={}, error={"error_type": "ValueError", "message": "boom", "retryable": True})
    failed = sim_return_from_store(LocalStore(tmp_path), "bad", cached=True)
    details = (tmp_path / "bad" / "error_details.arrow").read_bytes()
    assert (failed.task_id, failed.outputs, failed.cached) == \
        (sim_return_task_id(PID, 4, [], error=True), {}, True)
    assert (failed.error.error_type, failed.error.message, failed.error.retryable) == \
        ("ValueError", "boom", True)
    assert failed.error_details == TableArtifact(size=len(details), inline=details, checksum=blake(details))


# What modelops_contracts 0.3.1 checks when its frozen dataclasses are built (artifacts.py).
STAND_IN = '''
from dataclasses import dataclass
from typing import Mapping, Optional


class ContractViolationError(ValueError):
    pass


@dataclass(frozen=True)
class TableArtifact:
    content_type: str = "application/vnd.apache.arrow.stream"
    size: int = 0
    inline: Optional[bytes] = None
    ref: Optional[str] = None
    checksum: str = ""

    def __post_init__(self):
        if (self.inline is None) == (self.ref is None):
            raise ContractViolationError("Must provide exactly one of inline or ref")
        if self.inline is not None and (len(self.inline) != self.size or self.size > 524288):
            raise ContractViolationError("inline bytes length doesn't match size")
        if len(self.checksum) != 64 or any(c not in "0123456789abcdef" for c in self.checksum):
            raise ContractViolationError("checksum must be 64-character hex string (BLAKE2b-256)")


@dataclass(frozen=True)
class ErrorInfo:
    error_type: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class SimReturn:
    task_id: str
    outputs: Mapping[str, TableArtifact]
    error: Optional[ErrorInfo] = None
    error_details: Optional[TableArtifact] = None
    logs_ref: Optional[str] = None
    metrics: Optional[Mapping[str, float]] = None
    cached: bool = False

    def __post_init__(self):
        if not self.task_id:
            raise ContractViolationError("task_id must be non-empty")
        if not self.outputs and not self.error:
            raise ContractViolationError("outputs must contain at least one artifact "
                                         "(unless error is present)")
        if self.error and not self.error_details:
            raise ContractViolationError("error_details must be provided when error is present")
        for name, artifact in self.outputs.items():
            if not isinstance(artifact, TableArtifact):
                raise ContractViolationError(f"Output '{name}' must be TableArtifact")
'''


@pytest.fixture
def contracts_package(tmp_path, monkeypatch):
    """A modelops_contracts with the real package's classes and checks, first on sys.path."""
    package = tmp_path / "site" / "modelops_contracts"
    package.mkdir(parents=True)
    (package / "artifacts.py").write_text(textwrap.dedent(STAND_IN))
    (package / "__init__.py").write_text("from .artifacts import ErrorInfo, SimReturn, TableArtifact\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield package
    for name in [n for n in sys.modules if n.split(".")[0] == "modelops_contracts"]:
        del sys.modules[name]


def test_the_real_modelops_contracts_classes_are_used_when_importable(tmp_path, contracts_package):
    import modelops_contracts
    assert contract_classes() == (modelops_contracts.SimReturn, modelops_contracts.TableArtifact,
                                  modelops_contracts.ErrorInfo)
    data, big = b"[1,2,3]", b"z" * (INLINE_CAP + 10)
    write_result_dir(tmp_path / "ok", bundle_ref="b", entrypoint="m.n/s", params={}, param_id=PID, seed=5,
                     outputs={"incidence": data, "big": big})
    write_result_dir(tmp_path / "bad", bundle_ref="b", entrypoint="m.n/s", params={}, param_id=PID, seed=6,
                     outputs={}, error={"message": "boom"})
    got = sim_return_from_store(LocalStore(tmp_path), "ok", cached=True)
    assert isinstance(got, modelops_contracts.SimReturn) and got.cached
    assert got.outputs["incidence"] == modelops_contracts.TableArtifact(size=len(data), inline=data,
                                                                        checksum=blake(data))
    assert got.outputs["big"].ref == "ok/artifact_big.arrow" and got.outputs["big"].inline is None
    failed = sim_return_from_store(LocalStore(tmp_path), "bad")
    assert isinstance(failed.error, modelops_contracts.ErrorInfo) and failed.error.message == "boom"
    assert isinstance(failed.error_details, modelops_contracts.TableArtifact)
