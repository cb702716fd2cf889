"""Azure Blob Storage as a VersionedStore (the registry ModelOps keeps: container ``job-registry``).

The version is the blob's ETag: one GET returns content and ETag together, ``put`` sends
If-Match, ``create_if_absent`` uploads with overwrite=False. The SDK's retry policy retries
5xx answers and transport errors with a short exponential backoff, and small timeouts make an
unreachable service fail within seconds. Every failure becomes a one-line RegistryError that
names the registry URL, never the connection string.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from ..azure_client import AzureSetupError, blob_service, describe, error_code
from ..redact import CONNECTION_ENV
from .base import RegistryError, check_key


class AzureVersionedStore:
    def __init__(self, container: str, prefix: str = "", connection_string: str | None = None):
        connection_string = connection_string or os.environ.get(CONNECTION_ENV)
        self.url = f"az://{container}" + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")
        if not connection_string:
            raise RegistryError(f"registry {self.url}: set {CONNECTION_ENV}")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        try:
            service = blob_service(connection_string)
        except AzureSetupError as exc:
            raise RegistryError(f"registry {self.url}: {exc}") from None
        self.container = service.get_container_client(container)

    @classmethod
    def from_url(cls, url: str) -> AzureVersionedStore:
        container, _, prefix = url[len("az://"):].partition("/")
        if not container:
            raise RegistryError(f"registry {url}: no container name (az://CONTAINER[/PREFIX])")
        return cls(container, prefix)

    def _blob(self, key: str):
        return self.container.get_blob_client(self.prefix + check_key(key))

    def _fail(self, action: str, key: str, exc: Exception) -> RegistryError:
        return RegistryError(f"registry {self.url}: cannot {action} {key or '/'}: {describe(exc)}")

    def _upload(self, key: str, data: bytes, **conditions) -> None:
        """Upload, creating the container on first use."""
        blob = self._blob(key)
        try:
            blob.upload_blob(data, **conditions)
        except ResourceNotFoundError as exc:
            if error_code(exc) != "ContainerNotFound":
                raise
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            blob.upload_blob(data, **conditions)

    # ------------------------------------------------------------ the protocol

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            downloader = self._blob(key).download_blob()
            return downloader.readall(), downloader.properties.etag
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._fail("read", key, exc) from None

    def put(self, key: str, data: bytes, version: str) -> bool:
        try:
            self._blob(key).upload_blob(data, overwrite=True, etag=version,
                                        match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False  # changed or deleted since it was read
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise self._fail("write", key, exc) from None
        except AzureError as exc:
            raise self._fail("write", key, exc) from None

    def create_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self._upload(key, data, overwrite=False)
            return True
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise self._fail("create", key, exc) from None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        try:
            blobs = self.container.list_blobs(name_starts_with=self.prefix + prefix)
            names = [b.name[len(self.prefix):] for b in blobs]
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                return iter(())  # nothing was ever written to this registry
            raise self._fail("list", prefix, exc) from None
        except AzureError as exc:
            raise self._fail("list", prefix, exc) from None
        return iter(names)

    def delete(self, key: str) -> bool:
        try:
            self._blob(key).delete_blob()
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise self._fail("delete", key, exc) from None

    def __repr__(self) -> str:
        return f"AzureVersionedStore({self.url!r})"
