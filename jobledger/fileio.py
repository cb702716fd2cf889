"""Writing files so that a reader (or a crash) sees the old content or the new, never a part.

The one atomic-write helper: a uniquely named temp file in the target's directory (so the
rename stays on one filesystem and concurrent writers never share a temp name), fsync'ed
before ``os.replace`` (so a power loss cannot leave a renamed but empty file).
"""
from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

from .errors import JobledgerError


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; the temp file is removed on any failure."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class OutputFileError(JobledgerError):
    """A file the user asked for (``-o``) cannot be written."""


def write_output(path: str | os.PathLike, data: bytes) -> None:
    """Write a file the user named (``report -o``, ``spec -o``, ``prune -o``): atomically when it is a
    regular file or absent (its directory is made); straight through a link, a device or a pipe
    (``/dev/stdout``, a FIFO), which a rename would replace (as root even ``/dev/full`` or the
    ``/dev/stdout`` link). Any failure is one OutputFileError line."""
    target = Path(path)
    try:
        try:
            mode: int | None = os.lstat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise OutputFileError(f"cannot write {path}: it is a directory")
        if mode is not None and not stat.S_ISREG(mode):
            with open(target, "wb") as fh:  # a directory behind a link fails here, with its reason
                fh.write(data)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}") from None
