"""Start a throw-away Azurite blob service on a free loopback port (tests and benchmarks)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from processes import stop

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development account key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str:
    candidates = [os.environ.get("JOBLEDGER_AZURITE"), str(ROOT / ".services/node_modules/.bin/azurite-blob"),
                  shutil.which("azurite-blob")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("azurite-blob not found: run scripts/install_services.sh (needs Node.js and npm)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


class Azurite:
    """One Azurite process; stop() and start() again keep the same port and data."""

    def __init__(self, port: int | None = None, location: str | None = None):
        self.port = port or free_port()
        self.location = location or tempfile.mkdtemp(prefix="azurite-")
        self.process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def start(self, timeout: float = 30.0) -> Azurite:
        self.process = subprocess.Popen(
            [azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", self.location,
             "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"azurite exited with status {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("azurite did not start in time")

    def stop(self) -> None:
        if self.process:
            stop(self.process)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.location, ignore_errors=True)
