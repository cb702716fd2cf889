"""The one way jobledger opens Azure Blob clients: the same retry and timeout policy for the
provenance store, the registry and the Kubernetes runtime's spec upload, and one-line error
descriptions with every secret scrubbed.

Policy: a pooled requests transport (32 connections, enough for the head strategy's threads),
connect timeout 5 s, read timeout 30 s; the storage SDK's ExponentialRetry with retries after
about 0.2 s, 1.4 s and 1.6 s (``JOBLEDGER_AZURE_RETRIES`` overrides the count). The SDK's own
default waits 15 s, 18 s and 24 s, so a stopped service took a minute per request to report.
Imported only by modules that talk to Azure (it imports the SDK).
"""
from __future__ import annotations

import os
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from .errors import JobledgerError
from .limits import env_int
from .redact import CONNECTION_ENV, scrub

POOL_SIZE = 32
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30


class AzureSetupError(JobledgerError):
    """No usable credentials (missing or malformed connection string); the message holds no secret."""


def retry_policy() -> ExponentialRetry:
    retries = env_int("JOBLEDGER_AZURE_RETRIES", 3)
    return ExponentialRetry(initial_backoff=0.2, increment_base=1.2, retry_total=retries,  # type: ignore[arg-type]
                            random_jitter_range=0.2)  # type: ignore[arg-type]


def _transport() -> RequestsTransport:
    import requests
    from requests.adapters import HTTPAdapter
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True, connection_timeout=CONNECT_TIMEOUT,
                             read_timeout=READ_TIMEOUT)


def _options() -> dict[str, Any]:
    return {"transport": _transport(), "retry_policy": retry_policy()}


def blob_service(connection_string: str | None = None, *, account_url: str | None = None,
                 credential: Any = None) -> BlobServiceClient:
    """A BlobServiceClient from ``connection_string`` (default: $AZURE_STORAGE_CONNECTION_STRING), or
    from ``account_url`` and ``credential`` when there is no connection string."""
    conn = connection_string or os.environ.get(CONNECTION_ENV)
    try:
        if conn:
            return BlobServiceClient.from_connection_string(conn, **_options())
        if account_url is None:
            raise AzureSetupError(f"set {CONNECTION_ENV}")
        return BlobServiceClient(account_url, credential=credential, **_options())
    except (ValueError, AzureError) as exc:
        raise AzureSetupError(f"{CONNECTION_ENV} is malformed ({type(exc).__name__})") from None


def container_client(container: str, connection_string: str | None = None, *, account_url: str | None = None,
                     credential: Any = None) -> ContainerClient:
    return blob_service(connection_string, account_url=account_url,
                        credential=credential).get_container_client(container)


def error_code(exc: BaseException) -> str | None:
    """The storage error code (``ContainerNotFound``, ``BlobNotFound``…) of an SDK exception, if any."""
    return getattr(exc, "error_code", None)


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, with no secret in it."""
    if isinstance(exc, ClientAuthenticationError):
        return "authentication failed"
    if isinstance(exc, HttpResponseError) and exc.status_code:
        reason = error_code(exc) or getattr(exc, "reason", None) or "error"
        return scrub(f"HTTP {exc.status_code} {reason}")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        cause = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return f"cannot reach the blob service: unreachable ({cause})"
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return scrub(first_line[:200])
