"""BLAKE2b, the hash every ModelOps contract uses (ids, artifact checksums, layout hashes)."""
from __future__ import annotations

import hashlib


def blake2b_256():
    """An incremental BLAKE2b-256 hasher, for checksums of files read in chunks."""
    return hashlib.blake2b(digest_size=32)


def blake2b_hex(data: bytes | str, digest_size: int = 32) -> str:
    """Hex BLAKE2b of ``data`` (text is hashed as UTF-8); 32 bytes is BLAKE2b-256, the contracts' default."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=digest_size).hexdigest()
