"""Where jobs run: the Runtime base class (submit, status, cancel; in ``base``) and how to open one.

A runtime knows nothing about the ledger's state machine: it starts work, reports what
it sees and stops work. ``jobledger.sync`` turns what it sees into status transitions.
Implementations are imported lazily so that ``jobledger status`` never loads kubernetes.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import (
    ACTIVE,
    ELSEWHERE,
    FAILED,
    GONE,
    PENDING,
    PHASES,
    SUCCEEDED,
    Runtime,
    RuntimeFailure,
    RuntimeStatus,
    Submission,
)

RUNTIMES = ("k8s", "local")

# Runtime name → the class that implements it, imported on first use so that read commands never
# load the kubernetes client.
KNOWN_IMPLEMENTATIONS: dict[str, str] = {
    "k8s": "jobledger.runtimes.kubernetes:KubernetesRuntime",
    "kubernetes": "jobledger.runtimes.kubernetes:KubernetesRuntime",
    "local": "jobledger.runtimes.local:LocalRuntime",
}


def open_runtime(name: str, **options: Any) -> Runtime:
    """A runtime by name: 'k8s' (options: namespace, context, kubeconfig, image, bundle_registry,
    connection_string, service_account, postgres_secret, api_client) or 'local' (options: runs_dir,
    bundle_path)."""
    target = KNOWN_IMPLEMENTATIONS.get(name)
    if target is None:
        raise RuntimeFailure(f"--runtime: {name!r} is not one of {', '.join(RUNTIMES)}")
    module, _, class_name = target.partition(":")
    runtime_class: type[Runtime] = getattr(importlib.import_module(module), class_name)
    return runtime_class(**options)


__all__ = ["Runtime", "RuntimeStatus", "Submission", "RuntimeFailure", "open_runtime", "RUNTIMES", "PHASES",
           "KNOWN_IMPLEMENTATIONS", "PENDING", "ACTIVE", "SUCCEEDED", "FAILED", "GONE", "ELSEWHERE"]
