"""Containment: the one check every path jobledger derives from input goes through.

Layout outputs, bundle segments, manifest rows pulled from a registry, registry keys and artifact
names all become paths relative to a store (or a registry root). ``check_relative`` accepts only
relative paths of safe segments: not empty, not absolute, no empty/``.``/``..`` segment, no
backslash, no control character, within the lengths blob stores and file systems take. A
checked path joined to a root cannot leave it lexically; ``inside`` also resolves symlinks, for
the local store, whose reads must not follow a link out of the store.
"""
from __future__ import annotations

import os
import re

from .errors import JobledgerError

MAX_PATH = 1024     # Azure blob names are at most 1,024 characters
MAX_SEGMENT = 255   # NAME_MAX of the usual file systems (bytes)
_UNSAFE_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")


class UnsafePath(JobledgerError):
    """A derived path would leave its store (or cannot be stored at all)."""


def unsafe_reason(path: object) -> str | None:
    """Why ``path`` is not a safe relative path, or None when it is."""
    if not isinstance(path, str):
        return f"is a {type(path).__name__}, not text"
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if _UNSAFE_CHAR.search(path):
        return "contains a control character or a backslash"
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return f"has a {segment!r} segment" if segment else "has an empty segment"
        if len(segment.encode("utf-8", "surrogateescape")) > MAX_SEGMENT:
            return f"has a segment longer than {MAX_SEGMENT} bytes"
    return None


def check_relative(path: object, what: str) -> str:
    """``path`` itself when safe, else UnsafePath naming ``what`` (e.g. "output path")."""
    reason = unsafe_reason(path)
    if reason is not None:
        raise UnsafePath(f"{what} {_shown(path)} {reason}; it must stay inside the store")
    return path  # type: ignore[return-value]  # unsafe_reason returned None: it is a str


def check_segment(name: object, what: str) -> str:
    """One path segment (a file name such as an artifact's): a safe relative path without '/'."""
    check_relative(name, what)
    if "/" in name:  # type: ignore[operator]
        raise UnsafePath(f"{what} {_shown(name)} contains '/'; it must be one file name")
    return name  # type: ignore[return-value]


def inside(root_real: str, full: str) -> bool:
    """Whether ``full``, with every symlink resolved, is ``root_real`` (a realpath) or below it."""
    real = os.path.realpath(full)
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"
