"""scripts/delay_proxy.py, the latency proxy of the Azure validation benchmark: it forwards bytes both
ways, adds at least the configured delay, counts HTTP requests, and stops cleanly with connections open."""
from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from delay_proxy import DelayProxy, RequestCounter

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "delay_proxy.py"


class EchoServer:
    """A loopback TCP server sending back every byte it receives, one thread per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_the_proxy_forwards_bytes_adds_the_delay_counts_requests_and_stops_cleanly(monkeypatch, caplog):
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    echo = EchoServer()
    try:
        with DelayProxy("127.0.0.1", echo.port, one_way=0.05) as proxy:
            first = socket.create_connection(("127.0.0.1", proxy.port))
            message = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            t0 = time.monotonic()
            first.sendall(message)
            assert receive(first, len(message)) == message
            assert time.monotonic() - t0 >= 0.1  # 50 ms each way
            # A request with a body, then one split over two writes: three requests in all.
            second = socket.create_connection(("127.0.0.1", proxy.port))
            sent = (b"PUT /b HTTP/1.1\r\nContent-Length: 9\r\n\r\nGET /c HTTPGET /d HTTP/1.1\r\n", b"\r\n")
            for part in sent:
                second.sendall(part)
            big = bytes(range(256)) * 4096  # 1 MiB, more than one read: order and content kept
            second.sendall(big)
            assert receive(second, sum(map(len, sent)) + len(big)) == b"".join(sent) + big
            assert proxy.requests == 3 and proxy.connections == 2 and not proxy.uncounted
            # both connections are still open when the proxy stops
        assert not proxy._thread.is_alive()
        for sock in (first, second):  # the proxy closed its end of each
            sock.settimeout(5)
            assert sock.recv(10) == b""
            sock.close()
    finally:
        echo.close()
    gc.collect()
    assert not unraisable
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_refused_target_closes_the_client_connection_only():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    with DelayProxy("127.0.0.1", dead_port, one_way=0.01) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        client.settimeout(5)
        assert client.recv(10) == b""
        client.close()


def test_request_counter_stops_counting_a_chunked_stream():
    counter = RequestCounter()
    counter.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert counter.count == 1 and counter.lost


def test_the_proxy_process_reports_its_port_and_stats_and_exits_quietly_when_stdin_closes():
    echo = EchoServer()
    try:
        command = [sys.executable, str(SCRIPT), f"127.0.0.1:{echo.port}", "--rtt-ms", "10"]
        pipe = subprocess.PIPE
        process = subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, text=True)
        assert process.stdout is not None and process.stdin is not None
        port = json.loads(process.stdout.readline())["port"]
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"HEAD /x HTTP/1.1\r\n\r\n")
        assert receive(client, 20) == b"HEAD /x HTTP/1.1\r\n\r\n"
        process.stdin.write("stats\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline()) == {"connections": 1, "requests": 1, "uncounted": False}
        out, err = process.communicate(timeout=10)  # closes stdin with the connection still open
        client.close()
        assert (process.returncode, err) == (0, "")
        assert json.loads(out)["requests"] == 1
    finally:
        echo.close()
