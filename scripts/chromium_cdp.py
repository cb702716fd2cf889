"""Drive the system's headless Chromium (Debian's `chromium`) over the DevTools protocol.

A small client on websocket-client: start the browser with host resolution switched off (a page
can reach nothing beyond this machine even if it tried), open pages, record every request,
console error and uncaught exception, evaluate JavaScript, move the mouse, download files and
take screenshots. Used by the report tests and scripts/screenshot_report.py; no browser is
downloaded.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import websocket
from processes import stop

# Requests a self-contained page may make: itself, data:/blob: URLs, about:blank.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


class CDPError(RuntimeError):
    pass


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser process and one DevTools websocket to it (use as a context manager)."""

    def __init__(self, binary: str | None = None, *, width: int = 1300, height: int = 900,
                 timeout: float = 180):
        self.binary = binary or chromium_binary()
        if not self.binary:
            raise CDPError("no chromium on PATH (Debian: apt-get install chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self.events: list[dict] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="jobledger-chromium-")
        self.downloads = Path(self.profile) / "downloads"
        self.downloads.mkdir()
        args = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={self.width},{self.height}",
                "about:blank"]
        self.log = open(Path(self.profile) / "chromium.log", "wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise CDPError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=self.timeout,
                                              suppress_origin=True)
        self.send("Browser.setDownloadBehavior", {"behavior": "allowAndName",
                                                  "downloadPath": str(self.downloads), "eventsEnabled": True})
        return self

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        stop(self.process)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------ protocol

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        call_id = next(self._ids)
        message: dict = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def wait_for(self, method: str, *, session: str | None = None, since: int = 0, match=None,
                 timeout: float | None = None) -> dict:
        """The first event ``method`` (of ``session``) at index ``since`` or later that ``match``es."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = since
        while True:
            for event in self.events[seen:]:
                if event["method"] != method or event.get("sessionId") != session:
                    continue
                if match is None or match(event):
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for {method}")
            self._receive()

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        page.navigate(url)
        return page


class Page:
    def __init__(self, browser: Chromium, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def navigate(self, url: str) -> None:
        since = len(self.browser.events)
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.browser.wait_for("Page.loadEventFired", session=self.session, since=since)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in self.browser.events
                if e["method"] == method and e.get("sessionId") == self.session]

    @property
    def requests(self) -> list[str]:
        return [e["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    @property
    def external_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]

    @property
    def errors(self) -> list[str]:
        """Console errors and assertions, uncaught exceptions and browser log errors (e.g. a blocked load)."""
        found = [" ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
                 for e in self._events("Runtime.consoleAPICalled") if e["type"] in ("error", "assert")]
        for thrown in self._events("Runtime.exceptionThrown"):
            details = thrown["exceptionDetails"]
            found.append(details.get("exception", {}).get("description") or details["text"])
        found += [e["entry"]["text"] for e in self._events("Log.entryAdded")
                  if e["entry"]["level"] == "error"]
        return found

    def hover(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def download_by_click(self, x: float, y: float) -> Path:
        """Click at (x, y) and return the file the click downloaded."""
        since = len(self.browser.events)
        self.click(x, y)
        begun = self.browser.wait_for("Browser.downloadWillBegin", since=since)["params"]
        self.browser.wait_for("Browser.downloadProgress", since=since,
                              match=lambda e: e["params"]["guid"] == begun["guid"]
                              and e["params"]["state"] in ("completed", "canceled"))
        return self.browser.downloads / begun["guid"]

    def screenshot(self, path: str | os.PathLike, *, max_height: int = 6000) -> Path:
        """A PNG of the whole page (at most ``max_height`` CSS pixels tall)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.send("Page.captureScreenshot",
                         {"format": "png", "clip": clip, "captureBeyondViewport": True})
        Path(path).write_bytes(base64.b64decode(data["data"]))
        return Path(path)

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})
