"""A loopback stand-in for the Kubernetes API server, batch/v1 Jobs only, for the real client.

It speaks what the runtime uses: create (201; 409 AlreadyExists; 422 Invalid for a name
that is not a DNS-1123 label), get, list with an equality ``labelSelector``, the status
subresource, and delete with ``propagationPolicy`` (body or query). Errors are ``Status``
objects as the API server sends them. Like the API server it omits zero counts from a
Job's status. The test side sets a Job's status shape, deletes Jobs behind the client's
back (a TTL), injects one failure, and reads every request that was made.

Like the Job controller it gives every Job a pod (labels of the pod template plus
``job-name`` and ``controller-uid``), listed at ``/api/v1/namespaces/NS/pods``; the pod's log
is served at ``.../pods/NAME/log`` (``tailLines``; ``follow=true`` streams it chunked until the
test ends the container with ``end_log``), as the API server streams ``kubectl logs -f``.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
_POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _omit_zero_counts(status: dict) -> dict:
    return {k: v for k, v in status.items() if not (k in ("active", "succeeded", "failed", "ready",
                                                          "terminating") and not v)}


def _matches(labels: dict, selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class KubeStandIn:
    def __init__(self):
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.pod_logs: dict[tuple[str, str], bytearray] = {}
        self.pod_ended: dict[tuple[str, str], threading.Event] = {}
        self.requests: list[dict] = []
        self.deletions: list[dict] = []
        self._fail: dict | None = None
        self._hold: dict | None = None
        self._lock = threading.Lock()
        self._resource_version = 1000
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubeStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, context: str = "standin", namespace: str | None = None) -> Path:
        """A kubeconfig whose context points the real client at this server."""
        ctx = {"cluster": "standin", "user": "tester"}
        if namespace:
            ctx["namespace"] = namespace
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": context,
               "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
               "contexts": [{"name": context, "context": ctx}],
               "users": [{"name": "tester", "user": {"token": "test-token"}}]}
        path.write_text(json.dumps(doc))
        return path

    # ------------------------------------------------------------ test-side API

    def job(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            job = self.jobs.get((namespace, name))
            return copy.deepcopy(job) if job else None

    def add_job(self, namespace: str, manifest: dict) -> dict:
        """Create a Job directly (one made by another tool, e.g. without labels)."""
        with self._lock:
            return copy.deepcopy(self._store(namespace, copy.deepcopy(manifest)))

    def set_status(self, namespace: str, name: str, status: dict) -> None:
        """Replace a Job's status; zero counts are dropped as the API server does."""
        with self._lock:
            self.jobs[(namespace, name)]["status"] = _omit_zero_counts(copy.deepcopy(status))
            self._bump(self.jobs[(namespace, name)])

    def delete(self, namespace: str, name: str) -> None:
        """Remove a Job behind the client's back (what its TTL controller does)."""
        with self._lock:
            del self.jobs[(namespace, name)]

    def clear(self) -> None:
        """Forget every Job and pod (a fresh cluster for the next test)."""
        with self._lock:
            self.jobs.clear()
            self.pods.clear()
            self.pod_logs.clear()
            self.pod_ended.clear()

    def pod_of(self, namespace: str, job_name: str) -> str:
        with self._lock:
            return next(name for (ns, name), pod in self.pods.items()
                        if ns == namespace and pod["metadata"]["labels"].get("job-name") == job_name)

    def write_log(self, namespace: str, job_name: str, text: str) -> None:
        """The runner container writes ``text`` to its log."""
        pod = self.pod_of(namespace, job_name)
        with self._lock:
            self.pod_logs[(namespace, pod)] += text.encode()

    def end_log(self, namespace: str, job_name: str) -> None:
        """The runner container ends: a following log stream closes."""
        self.pod_ended[(namespace, self.pod_of(namespace, job_name))].set()

    def fail_next(self, method: str, code: int, reason: str, message: str) -> None:
        """Answer the next request with this method with an error Status."""
        with self._lock:
            self._fail = {"method": method, "code": code, "reason": reason, "message": message}

    def hold_next(self, method: str, *, store_first: bool):
        """Hang the next request with this method until the returned ``release()`` is called: the
        client sees no answer, as when its process is killed mid-request. With ``store_first`` the
        request takes effect before it hangs; without, it never does (released, it answers 504)."""
        hold = {"method": method, "store_first": store_first, "arrived": threading.Event(),
                "released": threading.Event()}
        with self._lock:
            self._hold = hold
        return hold["released"].set

    def wait_held(self, timeout: float) -> bool:
        """True once the request held by ``hold_next`` has arrived (and, if asked, taken effect)."""
        hold = self._hold
        return bool(hold) and hold["arrived"].wait(timeout)

    def _take_hold(self, method: str) -> dict | None:
        with self._lock:
            if self._hold and self._hold["method"] == method and not self._hold["arrived"].is_set():
                return self._hold
        return None

    def calls(self, method: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if method is None or r["method"] == method]

    def reset_calls(self) -> None:
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------ server side

    def _bump(self, job: dict) -> None:
        self._resource_version += 1
        job["metadata"]["resourceVersion"] = str(self._resource_version)

    def _store(self, namespace: str, manifest: dict) -> dict:
        meta = manifest.setdefault("metadata", {})
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        manifest.setdefault("apiVersion", "batch/v1")
        manifest.setdefault("kind", "Job")
        manifest["status"] = {}
        self._bump(manifest)
        self.jobs[(namespace, meta["name"])] = manifest
        template_labels = ((manifest.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        pod_name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        self.pods[(namespace, pod_name)] = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod_name, "namespace": namespace, "creationTimestamp": _now(),
                         "labels": {**template_labels, "job-name": meta["name"], "controller-uid": meta["uid"]}},
            "status": {"phase": "Running"}}
        self.pod_logs[(namespace, pod_name)] = bytearray()
        self.pod_ended[(namespace, pod_name)] = threading.Event()
        return manifest

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append({"method": method, "path": parts.path, "query": query})
            if self._fail and self._fail["method"] == method:
                fail, self._fail = self._fail, None
                return fail["code"], status_body(fail["code"], fail["reason"], fail["message"])
            pods = _PODS.match(parts.path)
            if pods and method == "GET":
                items = [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                         if ns == pods.group(1) and _matches(p["metadata"]["labels"], query.get("labelSelector"))]
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
            match = _JOBS.match(parts.path)
            if not match:
                return 404, status_body(404, "NotFound", "the server could not find the requested resource")
            namespace, name, sub = match.groups()
            if method == "POST" and not name:
                return self._create(namespace, json.loads(body or b"{}"))
            if method == "GET" and not name:
                items = [copy.deepcopy(j) for (ns, _), j in sorted(self.jobs.items())
                         if ns == namespace and _matches(j["metadata"].get("labels") or {}, query.get("labelSelector"))]
                return 200, {"kind": "JobList", "apiVersion": "batch/v1",
                             "metadata": {"resourceVersion": str(self._resource_version)}, "items": items}
            job = self.jobs.get((namespace, name))
            if job is None:
                return 404, status_body(404, "NotFound", f'jobs.batch "{name}" not found',
                                        {"name": name, "group": "batch", "kind": "jobs"})
            if method == "GET":
                return 200, copy.deepcopy(job)
            if method == "DELETE":
                options = json.loads(body) if body else {}
                policy = options.get("propagationPolicy") or query.get("propagationPolicy")
                self.deletions.append({"namespace": namespace, "name": name, "propagationPolicy": policy})
                del self.jobs[(namespace, name)]
                for key in [k for k, p in self.pods.items() if p["metadata"]["labels"].get("job-name") == name
                            and k[0] == namespace]:
                    del self.pods[key]  # the garbage collector takes the pods with their Job
                    self.pod_ended[key].set()
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "group": "batch", "kind": "jobs", "uid": job["metadata"]["uid"]}}
            return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported by the stand-in")

    def _create(self, namespace: str, manifest: dict) -> tuple[int, dict]:
        name = (manifest.get("metadata") or {}).get("name") or ""
        if not _DNS_LABEL.match(name):
            return 422, status_body(422, "Invalid", f'Job.batch "{name}" is invalid: metadata.name: Invalid value: '
                                    f'"{name}": must be a DNS-1123 label (at most 63 characters)',
                                    {"name": name, "group": "batch", "kind": "Job"})
        if (namespace, name) in self.jobs:
            return 409, status_body(409, "AlreadyExists", f'jobs.batch "{name}" already exists',
                                    {"name": name, "group": "batch", "kind": "jobs"})
        return 201, copy.deepcopy(self._store(namespace, manifest))

    def serve_log(self, handler, raw_path: str) -> bool:
        """Answer a pod log request (True), or say it is not one (False)."""
        parts = urlsplit(raw_path)
        match = _POD_LOG.match(parts.path)
        if not match:
            return False
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        key = (match.group(1), match.group(2))
        with self._lock:
            self.requests.append({"method": "GET", "path": parts.path, "query": query})
            known = key in self.pod_logs
        if not known:
            data = json.dumps(status_body(404, "NotFound", f'pods "{key[1]}" not found')).encode()
            handler.send_response(404)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return True
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def chunk(data: bytes) -> None:
            if data:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()

        with self._lock:
            sent = len(self.pod_logs[key])
            text = bytes(self.pod_logs[key])
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = b"".join(lines[-int(query["tailLines"]):])
        chunk(text)
        while query.get("follow") == "true":
            ended = self.pod_ended[key].wait(0.05)
            with self._lock:
                new = bytes(self.pod_logs[key][sent:])
                sent += len(new)
            chunk(new)
            if ended and not new:
                break
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        return True

    def _handler_class(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "GET" and standin.serve_log(self, self.path):
                    return
                hold = standin._take_hold(self.command)
                if hold is None:
                    code, doc = standin.handle(self.command, self.path, body)
                elif hold["store_first"]:
                    code, doc = standin.handle(self.command, self.path, body)
                    hold["arrived"].set()
                    hold["released"].wait(120)
                else:
                    hold["arrived"].set()
                    hold["released"].wait(120)
                    code, doc = 504, status_body(504, "Timeout", "the request was held and dropped")
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, *args):
                pass

        return Handler
