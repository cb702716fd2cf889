"""A directory as a VersionedStore: works on a local disk or a shared (POSIX-locking) filesystem.

Each key is a plain file (so other tools can read ``jobs/<id>/state.json`` directly). Beside it
live two hidden files: ``.<name>.version`` (a random token, replaced on every write) and
``.<name>.lock`` (flock'ed: shared for reads, exclusive for read-compare-replace), which makes
compare-and-swap safe across processes. Files are replaced atomically (temp file + os.replace).
The version is written before the content: a crash in between leaves the old content with a
fresh token, which only makes concurrent writers re-read.
"""
from __future__ import annotations

import errno
import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..fileio import write_atomic
from .base import RegistryError, check_key


class LocalVersionedStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(root)).resolve()
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot create directory: {exc.strerror}") from None

    # ------------------------------------------------------------ paths and locks

    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(".") for part in key.split("/")):
            raise RegistryError(f"invalid registry key {key!r} (parts may not start with '.')")
        return self.root / key

    @staticmethod
    def _sidecar(path: Path, suffix: str) -> Path:
        return path.with_name(f".{path.name}.{suffix}")

    @contextmanager
    def _locked(self, path: Path, exclusive: bool):
        lock_path = self._sidecar(path, "lock")
        try:
            if exclusive:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.parent.is_dir():
                yield False
                return
            fd = self._open_lock(lock_path, exclusive)
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot lock {path.relative_to(self.root)}: "
                                f"{exc.strerror}") from None
        if fd is None:  # a reader without write access and no lock file: files are replaced atomically
            yield True
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _open_lock(lock_path: Path, exclusive: bool) -> int | None:
        """Writers create the lock file; a reader that may not write (an analyst with read access only)
        takes a shared lock on an existing one opened read-only, or reads without a lock (None)."""
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if exclusive or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        try:
            return os.open(lock_path, os.O_RDONLY)
        except OSError:
            return None

    def _read(self, path: Path) -> tuple[bytes, str] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            version = self._sidecar(path, "version").read_text().strip()
        except FileNotFoundError:
            version = "unversioned"  # a file dropped in by hand: still replaceable by CAS
        return data, version

    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(self._sidecar(path, "version"), uuid.uuid4().hex.encode())
        write_atomic(path, data)

    # ------------------------------------------------------------ the protocol

    def get(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        with self._locked(path, exclusive=False) as present:
            return self._read(path) if present else None

    def put(self, key: str, data: bytes, version: str) -> bool:
        path = self._path(key)
        with self._locked(path, exclusive=True):
            current = self._read(path)
            if current is None or current[1] != version:
                return False
            self._io(self._write, path, data)
            return True

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with self._locked(path, exclusive=True):
            if path.exists():
                return False
            self._io(self._write, path, data)
            return True

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        directory = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not self.root.is_dir():
            raise RegistryError(f"registry {self.url}: directory is gone")
        keys = []
        try:
            for dirpath, dirnames, filenames in os.walk(directory, onerror=_raise):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot list {prefix or '/'}: {exc.strerror}") from None
        return iter(keys)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        with self._locked(path, exclusive=False) as present:
            if not present:
                return False
        with self._locked(path, exclusive=True):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            self._sidecar(path, "version").unlink(missing_ok=True)
            return True

    def _io(self, fn, path: Path, *args):
        try:
            return fn(path, *args)
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot write {path.relative_to(self.root)}: "
                                f"{exc.strerror}") from None

    @classmethod
    def from_url(cls, url: str) -> LocalVersionedStore:
        return cls(url[len("file://"):] if url.startswith("file://") else url)

    def __repr__(self) -> str:
        return f"LocalVersionedStore({str(self.root)!r})"


def _raise(exc: OSError) -> None:
    if isinstance(exc, FileNotFoundError):
        return  # a prefix with no keys under it
    raise exc
