"""A loopback TCP proxy that adds latency: every byte is delivered ``one_way`` seconds after it
arrived, in each direction, so a request/response round trip costs ``2 * one_way`` more — what
a client in one region sees from a storage account in the next. Bandwidth is not limited and
chunks are never held back behind one another's delay (each is due at its own arrival + delay).
It also counts the connections and the HTTP/1.x requests clients sent through it.

``stall``: a connection whose request bytes contain it is held from then on: that request and
everything after it in either direction is never delivered and the sockets stay open (a blob
download that never answers, as from a hung service) until ``stop``; ``stalled`` counts them.

In this process (its own thread and event loop; ``stop`` cancels and awaits every connection's
handler and closes its sockets before the loop closes):

    with DelayProxy("127.0.0.1", azurite_port, one_way=0.010) as proxy:
        ...  # connect to 127.0.0.1:proxy.port; proxy.requests, proxy.connections

In a process of its own, so that it does not share the measured process's interpreter lock
(benchmarks): ``python scripts/delay_proxy.py 127.0.0.1:PORT --rtt-ms 20`` prints
``{"port": N}``, answers each line ``stats`` on stdin with ``{"connections": C, "requests": R}``,
and stops cleanly, printing the stats a last time, when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time


class RequestCounter:
    """Counts HTTP/1.x requests in one client-to-server byte stream: a header block ending in an
    empty line, then ``Content-Length`` bytes of body. A chunked body cannot be skipped this way:
    the stream is then marked ``lost`` and counted no further."""

    def __init__(self) -> None:
        self.count = 0
        self.lost = False
        self._head = b""
        self._body = 0

    def feed(self, data: bytes) -> None:
        while data and not self.lost:
            if self._body:
                take = min(self._body, len(data))
                self._body -= take
                data = data[take:]
                continue
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data, self._head = self._head[:end], self._head[end + 4 :], b""
            self.count += 1
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self._body = int(value)
                elif name == b"transfer-encoding" and value.strip().lower() != b"identity":
                    self.lost = True


async def _close(writers) -> None:
    """Close each writer and wait until its socket is closed (also when called on cancellation)."""
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


class DelayProxy:
    def __init__(self, host: str, port: int, *, one_way: float = 0.0, stall: bytes | None = None):
        self.target = (host, port)
        self.one_way = one_way
        self.stall = stall
        self.stalled = 0
        self.port = 0
        self.connections = 0
        self._counters: list[RequestCounter] = []
        self._handlers: dict[asyncio.Task, asyncio.StreamWriter] = {}  # running handlers, their client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._failures: list[BaseException | None] = []
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    @property
    def requests(self) -> int:
        """HTTP requests clients sent so far (a snapshot; exact once they have had their answers)."""
        return sum(c.count for c in list(self._counters))

    @property
    def uncounted(self) -> bool:
        """Whether a client stream could not be parsed (a chunked body): ``requests`` is then too low."""
        return any(c.lost for c in list(self._counters))

    # ------------------------------------------------------------ one direction of one connection

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    counter: RequestCounter | None) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``one_way`` seconds after it arrived; end of
        stream is forwarded (half-close) after the same delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while True:
                data = await reader.read(65536)
                if counter is not None:
                    counter.feed(data)
                    if self.stall and self.stall in data:
                        self.stalled += 1
                        await asyncio.Event().wait()  # until stop() cancels this connection
                queue.put_nowait((time.monotonic() + self.one_way, data))
                if not data:
                    return

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        async with asyncio.TaskGroup() as group:
            group.create_task(receive())
            group.create_task(deliver())

    def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """A plain callback (not a coroutine), so the handler's task is ours from the start: stop can
        cancel it even before it first runs, and its writer is closed whatever happened."""
        self.connections += 1
        task = asyncio.get_running_loop().create_task(self._handle(client_reader, client_writer))
        self._handlers[task] = client_writer
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._handlers.pop(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # a bug, raised by stop()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers = [client_writer]
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
                writers.append(server_writer)
                counter = RequestCounter()
                self._counters.append(counter)
                # Either side failing (a reset) ends the other: the TaskGroup cancels it.
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pump(client_reader, server_writer, counter))
                    group.create_task(self._pump(server_reader, client_writer, None))
            except* OSError:  # a reset or refused connection ends this connection only
                pass
        except asyncio.CancelledError:  # stop(): the only canceller; the handler ends normally
            pass
        finally:
            await _close(writers)

    # ------------------------------------------------------------ the loop's thread

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await server.wait_closed()
            handlers = dict(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            # A handler cancelled before it first ran never closed its client's socket.
            await _close(handlers.values())

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start() or stop() in the caller's thread
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ------------------------------------------------------------ the caller's side

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None or not self.port:
            raise RuntimeError(f"the delay proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop accepting, cancel every connection's handler and wait for them, close the loop."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended (it failed)
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the delay proxy did not stop within 10 s")
        if self._error is not None or self._failures:
            raise RuntimeError(f"the delay proxy failed: {self._error or self._failures[0]!r}")

    def stats(self) -> dict:
        return {"connections": self.connections, "requests": self.requests, "uncounted": self.uncounted}

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A loopback TCP proxy adding latency (see the module doc).")
    parser.add_argument("target", help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (half each way)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with DelayProxy(host, int(port), one_way=args.rtt_ms / 2000) as proxy:
        print(json.dumps({"port": proxy.port}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(proxy.stats()), flush=True)
    print(json.dumps(proxy.stats()), flush=True)


if __name__ == "__main__":
    main()
