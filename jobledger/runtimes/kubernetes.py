"""The Kubernetes runtime: the ModelOps job-runner Job, its spec blob, and reading Job status.

Submit uploads the SimJob spec to container ``jobs`` at ``jobs/<job_type>/<job_id>.json``
(azure-storage-blob, $AZURE_STORAGE_CONNECTION_STRING) and creates the batch/v1 Job the
ModelOps runner image expects (see ``runner_job_manifest``). Status is read for every
tracked job of a namespace with ONE list call by label selector; a tracked job missing
from the list is fetched by name (Jobs created without the labels), and a 404 there means
the Job is gone (its TTL deleted it): the artifacts decide, never the missing Job.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from ..contracts import SimJob
from ..redact import CONNECTION_ENV, scrub
from .base import ACTIVE, FAILED, GONE, PENDING, SUCCEEDED, Runtime, RuntimeFailure, RuntimeStatus, Submission

DEFAULT_NAMESPACE = "modelops-dask-dev"
RUNNER_IMAGE = "ghcr.io/institutefordiseasemodeling/modelops-dask-runner"
DEFAULT_IMAGE = f"{RUNNER_IMAGE}:latest"
DEFAULT_SERVICE_ACCOUNT = "default"
POSTGRES_SECRET_KEY = "POSTGRES_URL"
DASK_SCHEDULER_ADDRESS = "tcp://dask-scheduler:8786"
SPEC_CONTAINER = "jobs"
STORAGE_SECRET = "modelops-storage"
STORAGE_SECRET_KEY = CONNECTION_ENV
RUNNER_LABELS = {"app": "modelops", "component": "job-runner"}
RUNNER_CONTAINER = "job-runner"
LABEL_SELECTOR = ",".join(f"{k}={v}" for k, v in RUNNER_LABELS.items())
TTL_SECONDS = 86400
BACKOFF_LIMIT = 3
REQUEST_TIMEOUT = 30


def spec_blob_key(job: SimJob) -> str:
    return blob_key(job.job_type, job.job_id)


def blob_key(job_type: str, job_id: str) -> str:
    return f"jobs/{job_type}/{job_id}.json"


def _submission(job_id: str, namespace: str, key: str, uid: str | None) -> Submission:
    """What a submit records: where the Job and the spec blob are."""
    return Submission({"namespace": namespace, "spec_blob": {"container": SPEC_CONTAINER, "key": key}},
                      {"k8s_name": job_id, "k8s_namespace": namespace, "k8s_uid": uid})


def spec_bytes(job: SimJob) -> bytes:
    """The spec JSON as ModelOps uploads it (its key order)."""
    return json.dumps(job.to_json(), indent=2).encode()


def default_bundle_registry(bundle_ref: str) -> str | None:
    """$MODELOPS_BUNDLE_REGISTRY, else the repository part of a ``repo@sha256:…`` bundle_ref, else None:
    a bare ``sha256:`` ref names no registry, and the runner cannot fetch a bundle without one."""
    env = os.environ.get("MODELOPS_BUNDLE_REGISTRY")
    if env:
        return env
    return bundle_ref.rsplit("@", 1)[0] if "@" in bundle_ref else None


def default_image() -> str:
    """The ModelOps runner image, with the tag ModelOps takes from $MODELOPS_RUNNER_TAG (default latest)."""
    return f"{RUNNER_IMAGE}:{os.environ.get('MODELOPS_RUNNER_TAG') or 'latest'}"


def runner_job_manifest(job_id: str, namespace: str, blob_key: str, *, bundle_registry: str,
                        image: str = DEFAULT_IMAGE, service_account: str = DEFAULT_SERVICE_ACCOUNT,
                        postgres_secret: str | None = None) -> dict:
    """The batch/v1 Job the ModelOps job runner expects, field by field (as ModelOps creates it)."""
    env = [
        {"name": "JOB_BLOB_KEY", "value": blob_key},
        {"name": "AZURE_STORAGE_CONNECTION_STRING",
         "valueFrom": {"secretKeyRef": {"name": STORAGE_SECRET, "key": STORAGE_SECRET_KEY}}},
        {"name": "DASK_SCHEDULER_ADDRESS", "value": DASK_SCHEDULER_ADDRESS},
        {"name": "MODELOPS_BUNDLE_REGISTRY", "value": bundle_registry},
    ]
    if postgres_secret:
        env.append({"name": "POSTGRES_URL",
                    "valueFrom": {"secretKeyRef": {"name": postgres_secret, "key": POSTGRES_SECRET_KEY}}})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_id, "namespace": namespace, "labels": {**RUNNER_LABELS, "job-id": job_id}},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {
                "metadata": {"labels": {**RUNNER_LABELS, "job-id": job_id}},
                "spec": {
                    "serviceAccountName": service_account,
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": RUNNER_CONTAINER,
                        "image": image,
                        "env": env,
                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}},
                    }],
                },
            },
        },
    }


def job_status(job: dict) -> RuntimeStatus:
    """A Job (as JSON) → what it says: conditions are the authoritative end; counts may be absent."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Failed":
            return RuntimeStatus(FAILED, condition.get("reason") or "Failed", condition.get("message"))
        if condition.get("type") == "Complete":
            return RuntimeStatus(SUCCEEDED, condition.get("reason"), condition.get("message"))
    active, failed = status.get("active") or 0, status.get("failed") or 0
    if active:
        return RuntimeStatus(ACTIVE, "Retrying" if failed else None,
                             f"{failed} failed pod(s), retrying" if failed else None)
    if failed or status.get("succeeded"):
        # Pods have ended but the controller has not written the verdict yet (or a retry is about to start).
        return RuntimeStatus(ACTIVE, "AwaitingCondition", None)
    return RuntimeStatus(PENDING)


class KubernetesRuntime(Runtime):
    name = "k8s"

    def __init__(self, namespace: str | None = None, context: str | None = None,
                 kubeconfig: str | None = None, image: str | None = None, bundle_registry: str | None = None,
                 connection_string: str | None = None,
                 service_account: str | None = None, postgres_secret: str | None = None,
                 api_client: Any = None):
        self.namespace: str = namespace or DEFAULT_NAMESPACE
        self.context = context
        self.kubeconfig = kubeconfig
        self.image = image or default_image()  # an explicit --image is used as given
        self.bundle_registry = bundle_registry
        self.service_account = service_account or DEFAULT_SERVICE_ACCOUNT
        self.postgres_secret = postgres_secret
        self.connection_string = connection_string
        self._api_client = api_client
        self._batch: Any = None

    # ------------------------------------------------------------ clients

    def batch(self):
        if self._batch is None:
            from kubernetes import client
            self._api_client = self._api_client or self._load_client()
            self._batch = client.BatchV1Api(self._api_client)
        return self._batch

    def core(self):
        from kubernetes import client
        self.batch()  # loads the configuration once
        return client.CoreV1Api(self._api_client)

    def _load_client(self):
        from kubernetes import client, config
        path = self.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        paths = [p for p in path.split(os.pathsep) if p]
        try:
            if any(os.path.exists(p) for p in paths):
                return config.new_client_from_config(config_file=paths[0], context=self.context)
            if self.context:
                raise RuntimeFailure(f"--context {self.context}: no kubeconfig at {path}")
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise RuntimeFailure(f"no usable Kubernetes configuration: {_first_line(exc)}") from None

    def _blob_service(self):
        from ..azure_client import AzureSetupError, blob_service
        conn = self.connection_string or os.environ.get(CONNECTION_ENV)
        if not conn:
            raise RuntimeFailure(f"submitting to Kubernetes uploads the spec blob: set {CONNECTION_ENV}")
        try:
            return blob_service(conn)
        except AzureSetupError as exc:
            raise RuntimeFailure(str(exc)) from None

    # ------------------------------------------------------------ protocol

    def registry_for(self, job: SimJob) -> str:
        registry = self.bundle_registry or default_bundle_registry(job.bundle_ref)
        if not registry:
            # ModelOps refuses too ("No registry URL found"): the runner could not pull the bundle.
            raise RuntimeFailure(f"no bundle registry for {job.bundle_ref[:19]}…: set "
                                 f"MODELOPS_BUNDLE_REGISTRY or use a '<registry>/<repo>@sha256:…' "
                                 f"bundle reference")
        return registry

    def manifest(self, job: SimJob, namespace: str | None = None) -> dict:
        return runner_job_manifest(job.job_id, namespace or self.namespace, spec_blob_key(job),
                                   bundle_registry=self.registry_for(job), image=self.image,
                                   service_account=self.service_account, postgres_secret=self.postgres_secret)

    def check(self, job: SimJob, job_row: dict) -> None:
        self.registry_for(job)
        self._blob_service()
        self.batch()

    def describe(self, job: SimJob, job_row: dict) -> dict:
        return {"runtime": "k8s", "spec_blob": {"container": SPEC_CONTAINER, "key": spec_blob_key(job)},
                "job": self.manifest(job, job_row.get("k8s_namespace"))}

    def submit(self, job: SimJob, job_row: dict, expected: list[dict]) -> Submission:
        from kubernetes.client import V1Job
        namespace = job_row.get("k8s_namespace") or self.namespace
        manifest = self.manifest(job, namespace)
        key = spec_blob_key(job)
        service = self._blob_service()
        blob = service.get_blob_client(SPEC_CONTAINER, key)
        created_blob = self._upload_spec(service, blob, spec_bytes(job))
        try:
            created = self._call("create Job", self.batch().create_namespaced_job, namespace,
                                 V1Job.from_dict(manifest), _request_timeout=REQUEST_TIMEOUT)
        except BaseException:
            if created_blob:
                self._delete_blob(blob)
            raise
        return _submission(job.job_id, namespace, key, created.metadata.uid)

    def recover(self, job_row: dict) -> Submission | None:
        """The Job an interrupted submit created (it is named after the job), if the API server has it."""
        namespace = job_row.get("k8s_namespace") or self.namespace
        job = self._get(namespace, job_row.get("k8s_name") or job_row["job_id"])
        if job is None:
            return None
        return _submission(job_row["job_id"], namespace, blob_key(job_row.get("job_type") or "simulation",
                                                                  job_row["job_id"]),
                           (job.get("metadata") or {}).get("uid"))

    def _upload_spec(self, service, blob, data: bytes) -> bool:
        """Upload without overwriting; True when this call created the blob (and so may delete it)."""
        from azure.core.exceptions import AzureError, ResourceExistsError
        try:
            try:
                service.get_container_client(SPEC_CONTAINER).create_container()
            except ResourceExistsError:
                pass
            try:
                blob.upload_blob(data, overwrite=False)
                return True
            except ResourceExistsError:
                if blob.download_blob().readall() != data:
                    raise RuntimeFailure(f"spec blob {SPEC_CONTAINER}/{blob.blob_name} already exists with "
                                         f"different content") from None
                return False
        except AzureError as exc:
            from ..azure_client import describe
            raise RuntimeFailure(f"cannot upload spec blob {SPEC_CONTAINER}/{blob.blob_name}: "
                                 f"{describe(exc)}") from None

    @staticmethod
    def _delete_blob(blob) -> None:
        from azure.core.exceptions import AzureError
        try:
            blob.delete_blob()
        except AzureError:
            pass

    def withdraw(self, job_row: dict) -> None:
        self.cancel(job_row)
        ref = json.loads(job_row.get("runtime_ref") or "{}")
        spec_blob = ref.get("spec_blob")
        if spec_blob:
            self._delete_blob(self._blob_service().get_blob_client(spec_blob["container"], spec_blob["key"]))

    def status(self, job_rows: Iterable[dict]) -> dict[str, RuntimeStatus]:
        by_namespace: dict[str, list[dict]] = defaultdict(list)
        for row in job_rows:
            by_namespace[row.get("k8s_namespace") or self.namespace].append(row)
        out: dict[str, RuntimeStatus] = {}
        for namespace, rows in by_namespace.items():
            listed = self._list(namespace)
            for row in rows:
                name = row.get("k8s_name") or row["job_id"]
                job = listed.get(name)
                if job is None:
                    job = self._get(namespace, name)
                out[row["job_id"]] = job_status(job) if job is not None else RuntimeStatus(
                    GONE, "NotFound", f"Job {namespace}/{name} not found (deleted, e.g. by its TTL)")
        return out

    # Status is read as raw JSON: the fields needed are few, and one odd Job (a model the client
    # cannot deserialise) must not hide the status of all the others.
    def _list(self, namespace: str) -> dict[str, dict]:
        items: dict[str, dict] = {}
        token = None
        while True:
            page = _json(self._call("list Jobs", self.batch().list_namespaced_job, namespace,
                                    label_selector=LABEL_SELECTOR, limit=500, _continue=token,
                                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            for job in page.get("items") or []:
                items[job["metadata"]["name"]] = job
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _get(self, namespace: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException
        try:
            return _json(self.batch().read_namespaced_job(name, namespace, _preload_content=False,
                                                          _request_timeout=REQUEST_TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RuntimeFailure(f"read Job {namespace}/{name}: {_api_message(exc)}") from None
        except _transport_errors() as exc:
            raise RuntimeFailure(f"read Job {namespace}/{name}: {_first_line(exc)}") from None

    def cancel(self, job_row: dict) -> None:
        from kubernetes.client.exceptions import ApiException
        namespace = job_row.get("k8s_namespace") or self.namespace
        name = job_row.get("k8s_name") or job_row["job_id"]
        try:
            self.batch().delete_namespaced_job(name, namespace, propagation_policy="Background",
                                               _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise RuntimeFailure(f"delete Job {namespace}/{name}: {_api_message(exc)}") from None
        except _transport_errors() as exc:
            raise RuntimeFailure(f"delete Job {namespace}/{name}: {_first_line(exc)}") from None

    def logs(self, job_row: dict, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The runner pod's log (the newest pod of the Job, container ``job-runner``), streamed
        with ``follow`` until the container ends, as ``kubectl logs -f`` does."""
        namespace = job_row.get("k8s_namespace") or self.namespace
        name = job_row.get("k8s_name") or job_row["job_id"]
        pods = _json(self._call(f"list pods of Job {namespace}/{name}", self.core().list_namespaced_pod,
                                namespace, label_selector=f"job-name={name}", _preload_content=False,
                                _request_timeout=REQUEST_TIMEOUT)).get("items") or []
        if not pods:
            raise RuntimeFailure(f"Job {namespace}/{name} has no pod (not started yet, or deleted with the "
                                 f"Job)")
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")["metadata"]["name"]
        response = self._call(f"read log of pod {namespace}/{pod}", self.core().read_namespaced_pod_log, pod,
                              namespace, container=RUNNER_CONTAINER, follow=follow, tail_lines=tail,
                              _preload_content=False, _request_timeout=None if follow else REQUEST_TIMEOUT)
        try:
            for chunk in response.stream(4096, decode_content=True):
                yield chunk.decode("utf-8", "replace")
        except _transport_errors() as exc:
            raise RuntimeFailure(f"read log of pod {namespace}/{pod}: {_first_line(exc)}") from None
        finally:
            response.release_conn()

    @staticmethod
    def _call(what: str, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise RuntimeFailure(f"{what}: {_api_message(exc)}") from None
        except _transport_errors() as exc:
            raise RuntimeFailure(f"{what}: {_first_line(exc)}") from None


def _json(response) -> dict:
    try:
        return json.loads(response.data)
    except ValueError as exc:
        raise RuntimeFailure(f"the Kubernetes API answered with invalid JSON: {exc}") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What talking to the API server can raise besides ApiException: connection refused, timeouts,
    TLS and protocol errors (urllib3), socket errors. Anything else is a bug and is left to raise."""
    from urllib3.exceptions import HTTPError
    return (HTTPError, OSError)


def _api_message(exc) -> str:
    """The API server's Status message (one line, secrets scrubbed), else the HTTP reason."""
    try:
        body = json.loads(exc.body)
        text = f"{body.get('reason') or exc.status}: {body.get('message')}"
    except (TypeError, ValueError, AttributeError):
        text = f"HTTP {exc.status} {exc.reason}"
    return scrub(text.splitlines()[0] if text.strip() else text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return scrub(text.splitlines()[0])
