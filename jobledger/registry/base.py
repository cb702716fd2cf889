"""What every registry part shares: its errors, the VersionedStore protocol and key rules."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from ..errors import JobledgerError, shown


class RegistryError(JobledgerError):
    """The registry is unreachable, refused a request, or holds something jobledger cannot use."""


class MovedElsewhere(RegistryError):
    """Another machine already moved the job to a status from which this move is no longer legal."""

    def __init__(self, message: str, job_id: str, remote_status: str):
        super().__init__(message)
        self.job_id = job_id
        self.remote_status = remote_status


@runtime_checkable
class VersionedStore(Protocol):
    """Blobs with an opaque version token that changes on every write (an ETag)."""

    url: str

    def get(self, key: str) -> tuple[bytes, str] | None:
        """Content and version in one read, or None when the key does not exist."""

    def put(self, key: str, data: bytes, version: str) -> bool:
        """Replace the content only if it is still at ``version``; False on a version mismatch."""

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Create the key; False when it already exists (its content is left alone)."""

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``; errors raise, they never look like an empty listing."""

    def delete(self, key: str) -> bool:
        """Remove the key; False when it did not exist."""


def check_key(key: str) -> str:
    """Keys are relative slash-separated names without empty, '.' or '..' parts."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise RegistryError(f"invalid registry key {shown(key)}")
    return key


def is_count(value: object) -> bool:
    """A non-negative integer SQLite can store (a pulled count may be any JSON number)."""
    return type(value) is int and 0 <= value < 2**63


def check_fields(doc: dict, key: str, *, text: tuple[str, ...] = (), counts: tuple[str, ...] = (),
                 where: str = "") -> None:
    """Each of ``text`` absent, null or a string, each of ``counts`` absent, null or a count."""
    for name in text:
        if not (doc.get(name) is None or isinstance(doc[name], str)):
            raise RegistryError(f"{key}: {where}key {name!r} is not text")
    for name in counts:
        if not (doc.get(name) is None or is_count(doc[name])):
            raise RegistryError(f"{key}: {where}key {name!r} is not a count (a whole number, 0 to 2**63-1)")


def check_text(doc: object, raw: str | bytes, key: str) -> None:
    """Refuse a parsed blob holding text that is not Unicode (a lone surrogate from a \\udXXX escape): it
    could be neither stored in SQLite nor printed. Only text with escapes needs the full check."""
    # Checked per type: mypy cannot pair a bytes needle with a bytes haystack through one expression.
    if (b"\\u" not in raw) if isinstance(raw, bytes) else ("\\u" not in raw):
        return
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RegistryError(f"{key}: holds text that is not valid Unicode "
                            "(a lone surrogate escape)") from None

