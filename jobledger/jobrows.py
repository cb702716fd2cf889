"""What a job row holds before the ledger stores it: its columns from a SimJob, the columns a spec
gives a job known only from ModelOps, its distinct parameter sets, and the spec as kept (StoredSpec)."""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .contracts import SimJob
from .layout import Layout
from .timeutil import utcnow


def job_columns(job: SimJob, *, status: str, store_url: str, layout: Layout, seed_policy: str,
                spec: StoredSpec, spec_format: str, runtime: str | None, k8s_name: str | None,
                k8s_namespace: str | None, parent_job_id: str | None, expected_total: int) -> dict:
    """The row of a job about to be registered (created now), with its spec (``spec_gz``, which
    Ledger keeps in job_specs)."""
    now = utcnow()
    return dict(job_id=job.job_id, job_type=job.job_type, status=status, bundle_ref=job.bundle_ref,
                runtime=runtime, k8s_name=k8s_name, k8s_namespace=k8s_namespace, parent_job_id=parent_job_id,
                store_url=store_url, layout=layout.name, seed_policy=seed_policy, spec_format=spec_format,
                spec_sha256=spec.sha256, spec_gz=spec.gz, tasks_total=len(job.tasks),
                expected_total=expected_total, created_at=now, updated_at=now,
                metadata=json.dumps(job.metadata))


# What registering a spec sets on a job known only from ModelOps's state.json.
ADOPTED_COLUMNS = ("job_type", "bundle_ref", "store_url", "layout", "seed_policy", "spec_format",
                   "spec_sha256", "spec_gz", "tasks_total", "expected_total")


def adoption_columns(existing: dict, columns: dict) -> dict:
    """The columns a job_columns row gives a job known only from ModelOps: its spec's, with ModelOps's
    metadata kept (over the spec's on the same key)."""
    meta = {**json.loads(columns["metadata"]), **json.loads(existing["metadata"] or "{}")}
    return {**{c: columns[c] for c in ADOPTED_COLUMNS}, "metadata": json.dumps(meta)}


def params_of(tasks) -> dict[str, str]:
    """param_id → canonical params JSON for the distinct parameter sets of some tasks."""
    distinct: dict[str, str] = {}
    for task in tasks:
        if task.params.param_id not in distinct:
            distinct[task.params.param_id] = json.dumps(task.params.params, sort_keys=True,
                                                        separators=(",", ":"), ensure_ascii=False)
    return distinct


@dataclass(frozen=True)
class StoredSpec:
    """A spec as the ledger keeps it: ``gz``, the spec as submitted, gzip-compressed JSON (key order
    kept, so that ``jobledger spec`` gives it back as it was; specfile keeps a file's very text), and
    ``sha256`` of its canonical JSON (``spec_hash``: sorted keys), which decides whether a
    re-registration is identical."""
    sha256: str
    gz: bytes

    @classmethod
    def of(cls, doc: Any) -> StoredSpec:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(spec_hash(doc), gzip.compress(text, SPEC_GZIP_LEVEL))

    def document(self) -> Any:
        return json.loads(gzip.decompress(self.gz))


# The canonical form a spec's hash is taken over (spec_hash): sorted keys, compact, ASCII.
CANONICAL_SPEC = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
SPEC_GZIP_LEVEL = 6


def spec_hash(spec_doc: Any) -> str:
    """A spec's identity: SHA-256 of json.dumps(doc, sort_keys=True, separators=(",", ":"))."""
    return hashlib.sha256(CANONICAL_SPEC.encode(spec_doc).encode()).hexdigest()
