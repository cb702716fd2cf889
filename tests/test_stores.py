"""Provenance stores: a local directory and Azure Blob (against a real Azurite)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from jobledger.contracts import param_id_of, sim_return_task_id
from jobledger.hashing import blake2b_hex
from jobledger.stores import (ProvenanceStore, StoreError, StoreNotFound,
                              normalize_store_url, open_store)
from jobledger.stores.local import LocalStore, write_result_dir

SAMPLE_DIR_PREFIX = "token/v1/sims/fdcb3d01c9b7/"


def local_names(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- local

def test_local_store_lists_names_and_sizes_recursively(sample_tree):
    store = open_store(str(sample_tree))
    assert isinstance(store, ProvenanceStore)
    assert dict(store.list("")) == local_names(sample_tree)
    assert sorted(store.list_names(SAMPLE_DIR_PREFIX)) == sorted(local_names(sample_tree))
    one = SAMPLE_DIR_PREFIX + "2e/2c/params_a6c4c857/seed_2828022609/"
    assert sorted(store.list_names(one)) == [one + n for n in
                                             ("artifact_incidence.arrow", "artifact_prevalence.arrow",
                                              "metadata.json", "result.json")]
    assert store.requests > 0


def test_local_store_prefix_is_a_string_prefix_like_a_blob_prefix(sample_tree):
    store = LocalStore(sample_tree)
    names = list(store.list_names(SAMPLE_DIR_PREFIX + "2"))
    assert names and all(n.startswith(SAMPLE_DIR_PREFIX + "2e/") for n in names)
    assert list(store.list_names(SAMPLE_DIR_PREFIX + "zz")) == []
    assert list(store.list_names("no/such/dir/")) == []
    grouped = dict(store.list_directories(SAMPLE_DIR_PREFIX + "b3/"))
    assert sorted(grouped[SAMPLE_DIR_PREFIX + "b3/52/params_c36e755d/seed_3143379043"]) == [
        "error_details.arrow", "metadata.json", "result.json"]


def test_local_store_missing_root_is_an_error_not_an_empty_listing(tmp_path):
    store = open_store(str(tmp_path / "absent"))
    with pytest.raises(StoreError, match="does not exist"):
        list(store.list_names(""))


def test_open_store_refuses_unknown_schemes_and_normalizes_paths(tmp_path, monkeypatch):
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("ftp://example.org/x")
    monkeypatch.chdir(tmp_path)
    assert normalize_store_url("rel/dir") == str(tmp_path / "rel" / "dir")
    assert normalize_store_url("az://c/p") == "az://c/p"


def test_write_result_dir_matches_the_worker_format(tmp_path):
    params = {"beta": 0.5}
    pid = param_id_of(params)
    out = write_result_dir(tmp_path / "r", bundle_ref="sha256:" + "a" * 64, entrypoint="m.x/base", params=params,
                           param_id=pid, seed=7, outputs={"incidence": b"abc", "metadata": b"{}"})
    result = json.loads((out / "result.json").read_text())
    assert result["task_id"] == sim_return_task_id(pid, 7, ["incidence", "metadata"])
    assert result["outputs"]["incidence"] == {"size": 3, "checksum": blake2b_hex(b"abc")}
    assert (out / "artifact_metadata.json").read_bytes() == b"{}"
    assert json.loads((out / "metadata.json").read_text())["param_id"] == pid
    failed = write_result_dir(tmp_path / "e", bundle_ref="sha256:" + "a" * 64, entrypoint="m.x/base", params=params,
                              param_id=pid, seed=8, outputs={}, error={"error_type": "ValueError", "message": "no"})
    assert sorted(p.name for p in failed.iterdir()) == ["error_details.arrow", "metadata.json", "result.json"]
    assert json.loads((failed / "result.json").read_text())["error"]["message"] == "no"
    crashed = write_result_dir(tmp_path / "c", bundle_ref="sha256:" + "a" * 64, entrypoint="m.x/base",
                               params=params, param_id=pid, seed=9, outputs={"incidence": b"x"}, complete=False)
    assert sorted(p.name for p in crashed.iterdir()) == ["artifact_incidence.arrow", "metadata.json"]


# ---------------------------------------------------------------- Azure (Azurite)

@pytest.fixture
def azure_sample(azure_conn, sample_tree):
    """The sample tree uploaded under a fresh container/prefix; returns its az:// URL."""
    url = f"az://prov-{uuid.uuid4().hex[:12]}/root"
    store = open_store(url)
    assert store.upload_tree(sample_tree) == len(local_names(sample_tree))
    return url


def test_azure_store_lists_like_the_local_store(azure_sample, sample_tree):
    store = open_store(azure_sample)
    assert isinstance(store, ProvenanceStore)
    assert dict(store.list("")) == local_names(sample_tree)
    before = store.requests
    assert sorted(store.list_names(SAMPLE_DIR_PREFIX + "b3/")) == sorted(
        n for n in local_names(sample_tree) if n.startswith(SAMPLE_DIR_PREFIX + "b3/"))
    assert store.requests == before + 1  # one page
    assert list(store.list_names("nothing-here/")) == []


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_head_and_read(backend, sample_tree, request):
    url = "file://" + str(sample_tree) if backend == "local" else request.getfixturevalue("azure_sample")
    store = open_store(url)
    path = SAMPLE_DIR_PREFIX + "2e/2c/params_a6c4c857/seed_2828022609/artifact_incidence.arrow"
    assert store.head(path) == 680
    assert store.head(SAMPLE_DIR_PREFIX + "nothing/result.json") is None
    assert blake2b_hex(store.read(path)) == "9a8f1b1229ee8e2ec646ac19735ddd5c85e2618822fb41016ae1b241929bbf5f"
    with pytest.raises(StoreNotFound, match="nothing/result.json"):
        store.read(SAMPLE_DIR_PREFIX + "nothing/result.json")


def test_azure_path_style_http_url_for_azurite(azure_sample, azurite):
    container = azure_sample[len("az://"):].split("/")[0]
    store = open_store(f"http://127.0.0.1:{azurite.port}/devstoreaccount1/{container}/root")
    assert store.head(SAMPLE_DIR_PREFIX + "30/59/params_03a21e97/seed_73054911/result.json") is not None


def test_azure_missing_container_is_an_error(azure_conn):
    store = open_store("az://no-such-container-here/x")
    with pytest.raises(StoreError, match="container 'no-such-container-here' does not exist"):
        list(store.list_names(""))


def test_azure_unreachable_service_gives_one_line_without_the_secret(monkeypatch, azurite):
    from azurite import connection_string, free_port
    dead = connection_string(free_port())
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", dead)
    monkeypatch.setenv("JOBLEDGER_AZURE_RETRIES", "0")
    store = open_store("az://prov/x")
    with pytest.raises(StoreError) as info:
        list(store.list_names(""))
    message = str(info.value)
    assert "cannot reach" in message and "\n" not in message
    assert "AccountKey" not in message and dead not in message


def test_azure_credentials_are_required_and_checked(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(StoreError, match="set AZURE_STORAGE_CONNECTION_STRING"):
        open_store("az://prov/x")
    with pytest.raises(StoreError, match="azure-identity"):
        open_store("https://acct.blob.core.windows.net/prov/x")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=sekrit;nonsense")
    with pytest.raises(StoreError) as info:
        open_store("az://prov/x")
    assert "sekrit" not in str(info.value)
    with pytest.raises(StoreError, match="SAS"):
        open_store("https://acct.blob.core.windows.net/prov/x?sv=1&sig=abc")


class DictStore(ProvenanceStore):
    """A backend that answers only the four required questions, from a dict."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__()
        self.files = dict(sorted(files.items()))

    def list_cost(self, names: int, directories: int) -> int:
        return 1

    def list(self, prefix: str = ""):
        self.count()
        return iter([(name, len(data)) for name, data in self.files.items() if name.startswith(prefix)])

    def head(self, path: str):
        return len(self.files[path]) if path in self.files else None

    def read(self, path: str) -> bytes:
        return self.files[path]


def test_the_base_class_builds_the_optional_questions_from_the_required_ones():
    store = DictStore({"a/1/result.json": b"{}", "a/1/metadata.json": b"{}", "a/2/x": b"", "b/3/result.json": b""})
    assert list(store.list_names("a/")) == ["a/1/metadata.json", "a/1/result.json", "a/2/x"]
    assert dict(store.list_directories("a/")) == {"a/1": ["metadata.json", "result.json"], "a/2": ["x"]}
    batches = list(store.walk_parts(["a/", "b/"], lambda d, names: (d, len(names))))
    assert batches == [[("a/1", 2), ("a/2", 1)], [("b/3", 1)]]
    assert store.requests == 4 and not store.parallel_walk


def test_a_backend_without_a_required_method_says_so():
    class Incomplete(ProvenanceStore):
        pass

    with pytest.raises(NotImplementedError):
        Incomplete().head("x")
    with pytest.raises(NotImplementedError):
        list(Incomplete().list_names(""))


def test_store_and_runtime_classes_come_from_one_scheme_table():
    from jobledger.runtimes import KNOWN_IMPLEMENTATIONS as RUNTIMES
    from jobledger.runtimes import Runtime, RuntimeFailure, open_runtime
    from jobledger.stores import KNOWN_IMPLEMENTATIONS
    assert set(KNOWN_IMPLEMENTATIONS) == {"file", "az", "https", "http"}
    assert isinstance(open_store("file:///tmp"), LocalStore)
    assert set(RUNTIMES) >= {"k8s", "local"}
    local = open_runtime("local", runs_dir="/tmp/runs")
    assert isinstance(local, Runtime) and local.namespace is None
    with pytest.raises(RuntimeFailure, match="not one of"):
        open_runtime("slurm")
