"""Registration: a spec document in → a SimJob → its expected outputs (staged) → the registry, if any →
one ledger transaction."""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import staging, states
from .contracts import ContractError, SimJob, from_contracts_object
from .jobrows import StoredSpec, adoption_columns, job_columns, params_of
from .layout import Layout, warn_for_bundle
from .ledger import Ledger, LedgerError
from .manifest import check_seed_policy, expected_outputs
from .specfile import load_document, load_spec_file
from .stores import normalize_store_url


def read_spec(path: str | Path) -> Any:
    """Load a spec file ('-' reads stdin) with one-line errors for unreadable or invalid JSON."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"cannot read spec {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = json.loads(text)
        if "\\u" in text:  # an escape can make a lone surrogate, text that can be neither hashed nor stored
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return doc
    except UnicodeEncodeError:
        raise ContractError(f"spec {path}: holds text that is not valid Unicode "
                            "(a lone surrogate escape)") from None
    except json.JSONDecodeError as exc:
        raise ContractError(f"spec {path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int/str conversion limit)
        raise ContractError(f"spec {path}: {str(exc).partition(';')[0]}") from None
    except RecursionError:
        raise ContractError(f"spec {path}: JSON nested too deeply") from None


@dataclass(frozen=True)
class Registered:
    """What registering a job did: ``created`` is False for an identical re-registration."""
    job_id: str
    expected: int
    created: bool
    status: str
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def prepare_job(spec: Any, *, bundle: str | None = None,
                job_id: str | None = None) -> tuple[SimJob, StoredSpec, str]:
    """(SimJob, the spec as the ledger keeps it, its format) from a spec file (a path, or '-' for stdin:
    read streaming, see specfile), a spec document or a contracts object."""
    if isinstance(spec, (str, Path)):
        loaded = load_spec_file(spec, bundle=bundle, job_id=job_id)
    elif isinstance(spec, (dict, list)):
        loaded = load_document(spec, bundle=bundle, job_id=job_id)
    elif isinstance(spec, SimJob):
        return spec, StoredSpec.of(spec.to_json()), "simjob"
    elif hasattr(spec, "tasks") and hasattr(spec, "job_type"):
        job = from_contracts_object(spec)
        return job, StoredSpec.of(job.to_json()), "simjob"
    else:
        raise ContractError(f"spec: expected a JSON document or a SimJob, got {type(spec).__name__}")
    return loaded.job, loaded.stored, loaded.format


def directory_bundle_ref(directory: str | Path) -> str:
    """``sha256:<hex>`` of a model directory, the same on every machine: its regular files (not
    ``__pycache__``, ``*.pyc`` or anything under a dot-name) in sorted relative-path order, each
    hashed as ``path NUL size NUL bytes``. Stands in for an OCI bundle digest for local runs."""
    root = Path(directory)
    if not root.is_dir():
        raise ContractError(f"--bundle-path {directory}: not a directory")
    digest = hashlib.sha256()
    def included(path: Path) -> bool:
        parts = path.relative_to(root).parts
        return path.is_file() and path.suffix != ".pyc" and not any(
            part == "__pycache__" or part.startswith(".") for part in parts)

    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if included(p))
    for relative, path in files:
        data = path.read_bytes()
        digest.update(relative.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return f"sha256:{digest.hexdigest()}"


def bundle_warnings(job: SimJob) -> list[str]:
    """Notes on bundle refs whose worker paths look surprising (a registry with a port)."""
    refs = dict.fromkeys([job.bundle_ref] + [t.bundle_ref for t in job.tasks[:1]])
    return [w for w in (warn_for_bundle(ref) for ref in refs) if w]


def create_job(ledger: Ledger, job: SimJob, spec: StoredSpec, spec_format: str, *, status: str, reason: str,
               store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
               runtime: str | None = None, namespace: str | None = None, k8s_name: str | None = None,
               parent_job_id: str | None = None, progress: Callable[[int], None] | None = None,
               on_total: Callable[[int], None] | None = None) -> Registered:
    """Record a job and all its expected outputs; an identical re-registration is a no-op.
    ``on_total``/``progress`` are told how many outputs there are and how many were prepared.

    With a registry, nothing is written locally unless the registry took the job, and no network round
    trip happens under the ledger's write lock: the outputs are staged on this connection (no lock), the
    manifest built from them and published (create-once) with state.json, and only then one local
    transaction copies the staged rows in. A retry after a failed local commit finds the job in the
    registry and imports it from there.
    """
    layout_obj = Layout.parse(layout)
    policy = check_seed_policy(seed_policy)
    store_url = normalize_store_url(store)
    notes = bundle_warnings(job)
    wanted = {"spec_sha256": spec.sha256, "store_url": store_url, "layout": layout_obj.name,
              "seed_policy": policy}
    if ledger.mirror is not None and not ledger.job_exists(job.job_id):
        ledger.mirror.pull_job(ledger, job.job_id, missing_ok=True)  # created by ModelOps or another machine?
    if ledger.job_exists(job.job_id) and ledger.job(job.job_id)["spec_format"] is not None:
        return _registered_again(ledger, job.job_id, wanted, notes)
    if on_total is not None:
        on_total(len(job.tasks))  # one simulation output per task; aggregations are few
    count = staging.stage(ledger.conn, expected_outputs(job, layout_obj, policy), params_of(job.tasks),
                          progress=progress)
    try:
        columns = job_columns(job, status=status, store_url=store_url, layout=layout_obj, seed_policy=policy,
                              spec=spec, spec_format=spec_format, runtime=runtime, k8s_name=k8s_name,
                              k8s_namespace=namespace, parent_job_id=parent_job_id, expected_total=count)
        if ledger.job_exists(job.job_id):
            # Known only from ModelOps's state.json: adopt it (its status, created_at, metadata stay).
            return _adopt(ledger, job.job_id, columns, notes)
        history = [[None, status, columns["created_at"], reason]]
        if ledger.mirror is not None and not ledger.mirror.publish_new(ledger, columns, history):
            # Created in the registry since we looked (another machine, ModelOps): take it from there.
            ledger.mirror.pull_job(ledger, job.job_id, missing_ok=True)
        else:
            with ledger.transaction():
                if not ledger.job_exists(job.job_id):  # (another process may have registered it in this file)
                    ledger.insert_job(columns, reason)
                    return Registered(job.job_id, count, True, status, notes)
    finally:
        staging.drop(ledger.conn)
    return create_job(ledger, job, spec, spec_format, status=status, reason=reason, store=store,
                      layout=layout, seed_policy=seed_policy, runtime=runtime, namespace=namespace,
                      k8s_name=k8s_name, parent_job_id=parent_job_id, progress=progress,
                      on_total=on_total)  # it exists now: the same registration, or one to adopt


def _registered_again(ledger: Ledger, job_id: str, wanted: dict, notes: list[str]) -> Registered:
    """A job registered before: the same registration is a no-op, another one an error."""
    existing = ledger.job(job_id)
    differences = _differences(existing, wanted)
    if differences:
        raise LedgerError(f"job {job_id} is already registered with other options "
                          f"({'; '.join(differences)}); {forget_hint(ledger, job_id)}")
    ledger.notify_changed(job_id)  # completes a publication an earlier attempt could not make
    return Registered(job_id, existing["expected_total"], False, existing["status"], notes)


def _adopt(ledger: Ledger, job_id: str, columns: dict, notes: list[str]) -> Registered:
    """Give a job known only from ModelOps's state.json the staged outputs and the spec's columns: with a
    registry, the manifest and state.json first (no local lock held), then one local transaction."""
    adopted = adoption_columns(ledger.job(job_id), columns)
    if ledger.mirror is None:
        with ledger.transaction():
            count = ledger.adopt_spec(job_id, adopted)
    else:
        swapped = ledger.mirror.swap_adoption(ledger, job_id, adopted)
        with ledger.transaction():
            count = ledger.adopt_spec(job_id, adopted)
            ledger.import_history(job_id, swapped.history, swapped.columns)
    return Registered(job_id, count, True, ledger.job(job_id)["status"], notes)


# What must match for a registration to be the same one, and how each difference is named.
_IDENTITY = (("spec_sha256", "spec"), ("store_url", "store"), ("layout", "layout"),
             ("seed_policy", "seed policy"))


def _differences(existing: dict, wanted: dict) -> list[str]:
    """``store: /a ≠ /b`` for each option in which a registration differs from the recorded one."""
    out = []
    for column, name in _IDENTITY:
        have, want = existing[column], wanted[column]
        if have != want:
            if column == "spec_sha256":
                have, want = f"sha256 {str(have)[:12]}…", f"sha256 {want[:12]}…"
            out.append(f"{name}: {have} ≠ {want}")
    return out


def forget_hint(ledger: Ledger, job_id: str) -> str:
    """How to remove a job so it can be registered afresh (with --recursive when it has resume children)."""
    children = ledger.query("SELECT count(*) AS n FROM jobs WHERE parent_job_id = ?", (job_id,))[0]["n"]
    if children:
        return f"`jobledger forget {job_id} --recursive` removes it and its resume jobs"
    return f"`jobledger forget {job_id}` removes it"


def register(ledger: Ledger, spec: Any, *, bundle: str | None = None, job_id: str | None = None,
             store: str | None = None, layout: str | None = None, seed_policy: str | None = None,
             namespace: str | None = None, k8s_name: str | None = None,
             progress: Callable[[int], None] | None = None,
             on_total: Callable[[int], None] | None = None) -> Registered:
    """Record a job that was submitted elsewhere: it starts in ``scheduled``. ``progress(n)`` is
    told as expected outputs are written."""
    job, stored, fmt = prepare_job(spec, bundle=bundle, job_id=job_id)
    runtime = "k8s" if (namespace or k8s_name) else None
    return create_job(ledger, job, stored, fmt, status=states.SCHEDULED,
                      reason="registered (submitted elsewhere)",
                      store=store, layout=layout, seed_policy=seed_policy, runtime=runtime,
                      namespace=namespace, k8s_name=k8s_name or (job.job_id if runtime else None),
                      progress=progress, on_total=on_total)


@dataclass(frozen=True)
class Forgotten:
    """Jobs removed from the local ledger (the job, then its resume jobs, parents first)."""
    job_ids: list[str]
    registry: str | None          # the registry that still has them, when one is configured
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def forget(ledger: Ledger, job_id: str, *, recursive: bool = False) -> Forgotten:
    """Remove a job (with ``recursive`` also its resume jobs, at any depth) from this ledger in one
    transaction, so that it can be registered afresh. A registry keeps its copy: only the local
    rows go, and a ``pull`` brings them back."""
    ledger.job(job_id)
    tree = ledger.query(
        "WITH RECURSIVE below(job_id, depth) AS (SELECT ?, 0 UNION ALL "
        " SELECT j.job_id, below.depth + 1 FROM jobs j JOIN below ON j.parent_job_id = below.job_id)"
        " SELECT below.job_id, j.status, j.runtime FROM below JOIN jobs j USING (job_id)"
        " ORDER BY depth, job_id",
        (job_id,))
    below = [r["job_id"] for r in tree[1:]]
    if below and not recursive:
        raise LedgerError(f"{job_id} has {len(below)} resume job(s) ({', '.join(below[:5])}"
                          f"{', …' if len(below) > 5 else ''}): `jobledger forget {job_id} --recursive` "
                          f"forgets them with it")
    ledger.delete_jobs([r["job_id"] for r in reversed(tree)])
    running = [r["job_id"] for r in tree if r["runtime"] and r["status"] not in states.TERMINAL]
    notes = [f"{', '.join(running)}: its runtime was not told; the work it started goes on"] \
        if running else []
    registry = ledger.mirror.url if ledger.mirror is not None else None
    return Forgotten([r["job_id"] for r in tree], registry, notes)


__all__ = ["read_spec", "prepare_job", "create_job", "register", "Registered", "bundle_warnings", "forget",
           "Forgotten", "forget_hint", "directory_bundle_ref"]
