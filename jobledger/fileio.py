"""Writing files so that a reader (or a crash) sees the old content or the new, never a part.

The one atomic-write helper: a uniquely named temp file in the target's directory (so the
rename stays on one filesystem and concurrent writers never share a temp name), fsync'ed
before ``os.replace`` (so a power loss cannot leave a renamed but empty file).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


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
