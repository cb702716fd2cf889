"""The one-place helpers: atomic write, BLAKE2b, secret scrubbing, the Azure client policy,
and the Kubernetes runtime's narrow error handling (bugs raise; API/network errors are one line)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from jobledger.fileio import write_atomic
from jobledger.hashing import blake2b_hex
from jobledger.redact import SecretInUrl, redact_url, refuse_sas, scrub


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f.json"]


def test_write_atomic_removes_its_temp_file_when_the_write_fails(tmp_path):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["f.json"]


def test_concurrent_atomic_writers_never_share_a_temp_file(tmp_path):
    """With one fixed temp name, two writers interleave and a reader can see a torn or foreign file."""
    target = tmp_path / "f"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(20):
                write_atomic(target, data)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if target.exists():
            seen.add(target.read_bytes())
    for t in threads:
        t.join()
    assert not errors
    assert seen <= set(payloads) and target.read_bytes() in payloads
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_blake2b_hex_matches_the_contracts_digests():
    assert blake2b_hex(b"abc") == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
    assert blake2b_hex("abc") == blake2b_hex(b"abc")
    assert len(blake2b_hex("x", digest_size=16)) == 32


def test_scrub_removes_every_kind_of_secret(monkeypatch):
    conn = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=S3cr3tKey==;BlobEndpoint=http://127.0.0.1:1/a;"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    text = scrub(f"failed with {conn} and https://h/c/p?sv=2020&sig=abcDEF%2B and Authorization: Bearer eyJhbGci.x.y")
    assert "S3cr3tKey" not in text and "abcDEF" not in text and "eyJhbGci" not in text
    assert scrub("AccountKey=zzz;x") == "AccountKey=<redacted>;x"


@pytest.mark.parametrize("url, shown", [
    ("https://acct.blob.core.windows.net/c/p?sv=2022&sig=SECRET", "https://acct.blob.core.windows.net/c/p"),
    ("az://c/p?sig=SECRET", "az://c/p"),
    ("https://user:SECRET@host/c", "https://host/c"),
    ("az://c/p", "az://c/p"),
])
def test_urls_are_shown_without_query_or_credentials(url, shown):
    assert redact_url(url) == shown
    if shown != url:
        with pytest.raises(SecretInUrl) as info:
            refuse_sas(url, "--store")
        assert "SECRET" not in str(info.value) and shown in str(info.value)
    else:
        assert refuse_sas(url, "--store") == url


def test_local_paths_with_question_marks_are_not_urls():
    assert refuse_sas("/data/what?/x", "--store") == "/data/what?/x"


def test_azure_clients_share_one_fast_retry_policy(azurite, monkeypatch):
    """A stopped service is reported within seconds with the default retry count (the SDK's own
    default backoff, 15 s + 18 s + 24 s, took about a minute per request)."""
    from azure.core.exceptions import AzureError
    from azurite import connection_string, free_port

    from jobledger.azure_client import blob_service, describe, retry_policy
    monkeypatch.delenv("JOBLEDGER_AZURE_RETRIES", raising=False)
    assert retry_policy().total_retries == 3
    dead = connection_string(free_port())
    started = time.monotonic()
    with pytest.raises(AzureError) as info:
        blob_service(dead).get_container_client("c").get_container_properties()
    assert time.monotonic() - started < 10
    message = describe(info.value)
    assert "unreachable" in message and "AccountKey" not in message and "\n" not in message


def test_kubernetes_runtime_lets_bugs_raise_and_turns_api_errors_into_one_line():
    from jobledger.runtimes import RuntimeFailure
    from jobledger.runtimes.kubernetes import KubernetesRuntime

    def buggy(*args, **kwargs):
        return {}["missing"]

    with pytest.raises(KeyError):
        KubernetesRuntime._call("list Jobs", buggy)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(RuntimeFailure, match=r"^list Jobs: \[Errno 111\] Connection refused$"):
        KubernetesRuntime._call("list Jobs", refused)

