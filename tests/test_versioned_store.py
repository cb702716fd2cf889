"""The VersionedStore protocol on both backends: the local directory and Azure Blob (Azurite)."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from jobledger.registry import RegistryError, VersionedStore, open_versioned_store


@pytest.fixture(params=["local", "azure"])
def registry_url(request, tmp_path, monkeypatch):
    if request.param == "local":
        return f"file://{tmp_path / 'registry'}"
    conn = request.getfixturevalue("azure_conn")
    assert conn
    # a fresh prefix per test keeps tests independent inside the shared container
    return f"az://job-registry/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(registry_url) -> VersionedStore:
    return open_versioned_store(registry_url)


def test_create_get_put_follow_compare_and_swap(store):
    key = "jobs/job-00000001/state.json"
    assert isinstance(store, VersionedStore)
    assert store.get(key) is None
    assert store.create_if_absent(key, b"one") is True
    assert store.create_if_absent(key, b"other") is False
    data, v1 = store.get(key)
    assert data == b"one"
    assert store.put(key, b"two", v1) is True
    data, v2 = store.get(key)
    assert (data, v2 != v1) == (b"two", True)
    # a writer still holding the first version loses and changes nothing
    assert store.put(key, b"stale", v1) is False
    assert store.get(key) == (b"two", v2)
    # rewriting identical bytes still changes the version (no ABA through equal content)
    assert store.put(key, b"two", v2) is True
    assert store.get(key)[1] not in (v1, v2)


def test_put_on_a_missing_key_is_a_version_mismatch(store):
    assert store.put("jobs/x/state.json", b"x", "whatever") is False
    assert store.get("jobs/x/state.json") is None


def test_list_keys_by_prefix_and_delete(store):
    for key in ("jobs/job-a/state.json", "jobs/job-a/manifest.jsonl.gz", "jobs/job-b/state.json", "other/k"):
        assert store.create_if_absent(key, key.encode())
    assert sorted(store.list_keys("jobs/")) == ["jobs/job-a/manifest.jsonl.gz", "jobs/job-a/state.json",
                                               "jobs/job-b/state.json"]
    assert sorted(store.list_keys("jobs/job-a")) == ["jobs/job-a/manifest.jsonl.gz", "jobs/job-a/state.json"]
    assert sorted(store.list_keys()) == ["jobs/job-a/manifest.jsonl.gz", "jobs/job-a/state.json",
                                         "jobs/job-b/state.json", "other/k"]
    assert list(store.list_keys("nothing/")) == []
    assert store.delete("jobs/job-a/state.json") is True
    assert store.delete("jobs/job-a/state.json") is False
    assert store.get("jobs/job-a/state.json") is None
    assert store.create_if_absent("jobs/job-a/state.json", b"again") is True


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b"])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(RegistryError, match="invalid registry key"):
        store.get(key)


COUNTER = """
import sys
from jobledger.registry import open_versioned_store
store = open_versioned_store(sys.argv[1])
conflicts = 0
for _ in range(int(sys.argv[2])):
    while True:
        data, version = store.get("counter")
        if store.put("counter", str(int(data) + 1).encode(), version):
            break
        conflicts += 1
print(conflicts)
"""


def test_compare_and_swap_is_safe_across_processes(store, registry_url):
    """8 processes increment one counter by read-compare-swap: no increment is lost."""
    store.create_if_absent("counter", b"0")
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, registry_url, "15"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert store.get("counter")[0] == b"120"


def test_local_store_keeps_plain_files_readable_by_other_tools(tmp_path):
    store = open_versioned_store(str(tmp_path / "reg"))
    store.create_if_absent("jobs/j/state.json", b'{"a": 1}')
    assert (tmp_path / "reg" / "jobs" / "j" / "state.json").read_bytes() == b'{"a": 1}'
    # hidden version/lock files never show up as keys
    assert list(store.list_keys("jobs/")) == ["jobs/j/state.json"]
    assert open_versioned_store(f"file://{tmp_path / 'reg'}").get("jobs/j/state.json")[0] == b'{"a": 1}'


def test_unknown_scheme_is_a_one_line_error():
    with pytest.raises(RegistryError, match="unsupported scheme"):
        open_versioned_store("s3://bucket/x")


def test_azure_without_connection_string_says_what_to_set(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(RegistryError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_versioned_store("az://job-registry")


def test_azure_listing_an_absent_container_is_empty(azure_conn):
    store = open_versioned_store(f"az://empty-{uuid.uuid4().hex[:8]}")
    assert list(store.list_keys("jobs/")) == []
    assert store.get("jobs/x/state.json") is None


def test_azure_unreachable_fails_fast_with_one_line_and_no_secret(monkeypatch):
    """Nothing listens on the port: every call raises (listing never returns an empty list) within seconds."""
    from azurite import ACCOUNT_KEY, connection_string, free_port
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(free_port()))
    store = open_versioned_store("az://job-registry/p")
    for call in (lambda: store.get("jobs/a/state.json"), lambda: list(store.list_keys("jobs/"))):
        started = time.monotonic()
        with pytest.raises(RegistryError) as info:
            call()
        assert time.monotonic() - started < 15
        message = str(info.value)
        assert "\n" not in message and "az://job-registry/p" in message and "unreachable" in message
        assert ACCOUNT_KEY not in message and "AccountKey" not in message
