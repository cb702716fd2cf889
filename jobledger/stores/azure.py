"""A provenance store in Azure Blob Storage (or Azurite).

``az://CONTAINER/PREFIX`` takes its credentials from AZURE_STORAGE_CONNECTION_STRING;
``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`` uses that connection string when
set and DefaultAzureCredential otherwise (when azure-identity is installed). Path-style
``http(s)://HOST:PORT/ACCOUNT/CONTAINER/PREFIX`` URLs address emulators such as Azurite.
The connection string is never printed, logged or recorded: error messages are rebuilt
from the parts of the exception that cannot hold it, then scrubbed anyway.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from ..azure_client import AzureSetupError, container_client, describe, error_code
from ..paths import check_relative
from ..redact import CONNECTION_ENV, refuse_sas
from .base import ProvenanceStore, StoreError, StoreNotFound, UnreadableFile

PAGE_SIZE = 5000  # the most names one Azure list request returns


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_url(url: str) -> tuple[str | None, str, str]:
    """(account URL or None for az://, container, prefix ending in '/' or empty)."""
    refuse_sas(url, "store", StoreError)
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme == "az":
        account_url = None
        segments = [parts.netloc] + segments if parts.netloc else segments
    else:
        host = parts.hostname or ""
        if not host:
            raise StoreError(f"store URL {url!r} has no host")
        account_url = f"{parts.scheme}://{parts.netloc}"
        if _is_ip_or_localhost(host):  # path-style: /ACCOUNT/CONTAINER/...
            if not segments:
                raise StoreError(f"store URL {url!r} names no account")
            account_url += "/" + segments.pop(0)
    if not segments:
        raise StoreError(f"store URL {url!r} names no container")
    container, prefix = segments[0], "/".join(segments[1:])
    return account_url, container, (prefix + "/") if prefix else ""


class AzureStore(ProvenanceStore):
    """Paths relative to CONTAINER/PREFIX. A request is one list page, head or download."""

    page_size = PAGE_SIZE

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        account_url, self.container_name, self.prefix = parse_url(url)
        self.where = f"{url}"
        credential = None
        if not os.environ.get(CONNECTION_ENV):
            if account_url is None:
                raise StoreError(f"{url}: set {CONNECTION_ENV} to reach an az:// store")
            credential = self._default_credential(url)
        try:
            self.container = container_client(self.container_name, account_url=account_url,
                                              credential=credential)
        except AzureSetupError as exc:
            raise StoreError(f"{exc} (cannot open {url})") from None

    @classmethod
    def from_url(cls, url: str) -> AzureStore:
        return cls(url)

    @staticmethod
    def _default_credential(url: str):
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise StoreError(f"{url}: set {CONNECTION_ENV} or install azure-identity to use "
                             f"DefaultAzureCredential") from None
        return DefaultAzureCredential()

    def list_cost(self, names: int, directories: int) -> int:
        return max(1, -(-names // PAGE_SIZE))

    # ------------------------------------------------------------ errors

    def _error(self, exc: Exception, doing: str) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, ResourceNotFoundError) and error_code(exc) == "ContainerNotFound":
            return StoreError(f"{self.where}: container {self.container_name!r} does not exist")
        return StoreError(f"{self.where}: {describe(exc)} while {doing}")

    # ------------------------------------------------------------ listing

    def _pages(self, pager, doing: str):
        try:
            for page in pager.by_page():
                self.count()
                yield page
        except (AzureError, StoreError) as exc:
            raise self._error(exc, doing) from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        full = self.prefix + prefix
        cut = len(self.prefix)
        pager = self.container.list_blobs(name_starts_with=full, results_per_page=PAGE_SIZE)
        for page in self._pages(pager, f"listing {prefix or '/'}"):
            for blob in page:
                yield blob.name[cut:], blob.size

    def list_names(self, prefix: str = "") -> Iterator[str]:
        full = self.prefix + prefix
        cut = len(self.prefix)
        pager = self.container.list_blob_names(name_starts_with=full, results_per_page=PAGE_SIZE)
        for page in self._pages(pager, f"listing {prefix or '/'}"):
            for name in page:
                yield name[cut:]

    # ------------------------------------------------------------ single paths

    def head(self, path: str) -> int | None:
        self.count()
        try:
            return self.container.get_blob_client(self.prefix + path).get_blob_properties().size
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._error(exc, f"reading {path}") from None
            return None
        except AzureError as exc:
            raise self._error(exc, f"reading {path}") from None

    def read(self, path: str, limit: int | None = None) -> bytes:
        return b"".join(self.chunks(path, limit))


    def chunks(self, path: str, limit: int | None = None) -> Iterator[bytes]:
        """The blob in chunks; its size (known from the first response) is checked against ``limit``
        before the rest is downloaded."""
        self.count()
        try:
            blob = self.container.get_blob_client(check_relative(self.prefix + path, "blob"))
            downloader = blob.download_blob()
            if limit is not None and downloader.size > limit:
                raise UnreadableFile(f"{path} is {downloader.size} bytes, over the {limit}-byte limit")
            yield from downloader.chunks()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._error(exc, f"reading {path}") from None
            raise StoreNotFound(f"{path} not found in store {self.where}") from None
        except AzureError as exc:
            raise self._error(exc, f"reading {path}") from None

    # ------------------------------------------------------------ writing (tests, benchmarks, tools)

    def upload(self, path: str, data: bytes, *, overwrite: bool = True) -> None:
        self.count()
        try:
            self.container.upload_blob(self.prefix + path, data, overwrite=overwrite)
        except AzureError as exc:
            raise self._error(exc, f"writing {path}") from None

    def upload_tree(self, directory: str | os.PathLike, *, threads: int = 16) -> int:
        """Upload every file under ``directory`` to the same relative names; creates the container."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self._error(exc, "creating the container") from None
        root = Path(directory)
        files = [p for p in root.rglob("*") if p.is_file()]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: self.upload(p.relative_to(root).as_posix(), p.read_bytes()), files))
        return len(files)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix`` (tests and tools: the workflow of removing an output)."""
        names = list(self.list_names(prefix))
        for name in names:
            self.count()
            try:
                self.container.delete_blob(self.prefix + name)
            except AzureError as exc:
                raise self._error(exc, f"deleting {name}") from None
        return len(names)
