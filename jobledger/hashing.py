"""BLAKE2b, the hash every ModelOps contract uses (ids, artifact checksums, layout hashes)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable


def blake2b_256_of(chunks: Iterable[bytes]) -> str:
    """Hex BLAKE2b-256 of a file read in chunks, hashed as they come (artifact checksums)."""
    hasher = hashlib.blake2b(digest_size=32)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def blake2b_hex(data: bytes | str, digest_size: int = 32) -> str:
    """Hex BLAKE2b of ``data`` (text is hashed as UTF-8); 32 bytes is BLAKE2b-256, the contracts' default."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=digest_size).hexdigest()
