"""Wire-compatible ModelOps contract types (modelops-contracts 0.3.1).

Only the standard library (and jobledger.errors) is used here so that every other module can depend on it.
Real ``modelops_contracts`` objects are accepted wherever a SimJob/SimTask is expected,
by duck typing (``job_type``, ``tasks``, ``task.params.param_id``, ``task.params.params``).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import JobledgerError, shown
from .hashing import blake2b_hex
from .limits import env_int

SEED_MAX = 2**64 - 1
_HEX64 = r"[0-9a-f]{64}"
_BUNDLE_RE = re.compile(rf"(?:sha256:{_HEX64}|[^\s@]+@sha256:{_HEX64})")  # all used with fullmatch
_SCENARIO_RE = re.compile(r"[a-z0-9](?:[a-z0-9\-_.]{0,62}[a-z0-9])?")
# ModelOps (modelops_contracts.entrypoint) refuses an import path that is not a dotted module
# ("Invalid import_path format"): `models.sir/baseline` runs, `sir/baseline` never does.
_IMPORT_RE = re.compile(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*")
_OBJECT_RE = re.compile(r"[A-Za-z_]\w*")
_JOB_ID_RE = re.compile(r"(?:job|calib)-[0-9a-f]{8}")
_RESUME_ID_RE = re.compile(r"(?:job|calib)-[0-9a-f]{8}(?:-r[0-9]+)+")  # children of a resume: <root>-r<N>…
JOB_TYPES = ("simulation", "calibration")


class ContractError(JobledgerError, ValueError):
    """A spec or value breaks the ModelOps contract; the message names what and where."""


# ---------------------------------------------------------------- identities

def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, bool) or isinstance(value, (int, str)) or value is None:
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError(f"{where}: non-finite float {shown(value)} is not allowed")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ContractError(f"{where}: key {shown(k)} is not a string")
            _check_scalar(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_scalar(v, f"{where}[{i}]")
        return
    raise ContractError(f"{where}: value of type {type(value).__name__} is not allowed")


# One encoder, built once: json.dumps with options builds a new one on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(params: Mapping[str, Any]) -> str:
    """The contracts' canonical JSON: sorted keys, compact, floats as repr, -0.0 kept."""
    _check_scalar(dict(params), "params")
    return _CANONICAL.encode(params)


def param_id_of(params: Mapping[str, Any]) -> str:
    return _param_id_of_canonical(canonical_json(params))


def _param_id_of_canonical(text: str) -> str:
    return blake2b_hex("contracts:param:v1|" + text)


def canonical_task_id(bundle_ref: str, entrypoint: str, param_id: str, seed: int) -> str:
    return blake2b_hex(f"sim:v1|{bundle_ref}|{entrypoint}|{param_id}|{seed}", digest_size=16)


def sim_return_task_id(param_id: str, seed: int, output_names: Iterable[str], error: bool = False) -> str:
    """The task id a worker writes into result.json; an error result names no outputs, only 'error'."""
    if error:
        return blake2b_hex(f"{param_id[:16]}-{seed}-error")
    return blake2b_hex(f"{param_id[:16]}-{seed}-{','.join(sorted(output_names))}")


def aggregation_id(target_entrypoint: str, sim_task_ids: Iterable[str]) -> str:
    return blake2b_hex(f"{target_entrypoint}:{','.join(sorted(sim_task_ids))}")[:16]


def bundle12(bundle_ref: str) -> str:
    """Contracts' short bundle name: after the last '@', then after the first ':'."""
    tail = bundle_ref.rsplit("@", 1)[-1]
    return tail.split(":", 1)[-1][:12]


def replicate_seed(param_id: str, index: int) -> int:
    return int(blake2b_hex(f"{param_id}:{index}", digest_size=8), 16) % 2**32


def job_id_for(spec: Mapping[str, Any], prefix: str = "job") -> str:
    """A deterministic job id for specs that carry none: same spec, same id."""
    return f"{prefix}-{blake2b_hex(json.dumps(spec, sort_keys=True), digest_size=4)}"


# ---------------------------------------------------------------- validation rules

def check_bundle_ref(ref: Any, where: str = "bundle_ref") -> str:
    if not isinstance(ref, str) or not _BUNDLE_RE.fullmatch(ref):
        raise ContractError(f"{where}: {shown(ref)} is not 'sha256:<64 hex>' or '<repo>@sha256:<64 hex>'")
    return ref


def check_entrypoint(ep: Any, where: str = "entrypoint") -> str:
    """An entrypoint as ModelOps parses it: ``dotted.module/scenario`` or ``dotted.module:object``."""
    if not isinstance(ep, str) or ("/" in ep) == (":" in ep):
        raise ContractError(f"{where}: {shown(ep)} is not 'import.path/scenario' or 'module.path:object'")
    module, sep, name = ep.rpartition("/") if "/" in ep else ep.rpartition(":")
    if not _IMPORT_RE.fullmatch(module):
        raise ContractError(f"{where}: {shown(ep)}: import path {shown(module)} is not a dotted module path "
                            f"such as 'models.sir' (ModelOps refuses it: 'Invalid import_path format')")
    if not (_SCENARIO_RE if sep == "/" else _OBJECT_RE).fullmatch(name):
        what = "scenario" if sep == "/" else "object name"
        raise ContractError(f"{where}: {shown(ep)}: {what} {shown(name)} is not valid")
    return ep


def check_target_entrypoints(targets: Any, where: str) -> list[str]:
    """Target entrypoints follow the entrypoint rule; each error names the target."""
    if not isinstance(targets, list) or not targets:
        raise ContractError(f"{where}: must be a non-empty list of target entrypoints")
    return [check_entrypoint(t, f"{where}[{i}]") for i, t in enumerate(targets)]


def check_seed(seed: Any, where: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ContractError(f"{where}: {shown(seed)} is not an integer in 0..2**64-1")
    return seed


def max_tasks() -> int:
    """The most tasks one job may have (``JOBLEDGER_MAX_TASKS``, default 10 million)."""
    return env_int("JOBLEDGER_MAX_TASKS", 10_000_000, minimum=1)


def check_task_count(n: int) -> int:
    limit = max_tasks()
    if n > limit:
        raise ContractError(f"the job has {n:,} tasks, more than the {limit:,} allowed "
                            f"(JOBLEDGER_MAX_TASKS); split it into several jobs")
    return n


def check_job_id(job_id: Any, where: str = "job_id") -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id) and not _is_resume_id(job_id):
        raise ContractError(f"{where}: {shown(job_id)} is not 'job-<8 hex>' or 'calib-<8 hex>'")
    return job_id


def _is_resume_id(job_id: str) -> bool:
    return bool(_RESUME_ID_RE.fullmatch(job_id)) and len(job_id) <= 63


_PLAIN_SCALARS = frozenset((str, int, bool))  # exact types: checking them needs no isinstance walk


def _check_params_values(values: Any, where: str) -> dict:
    if type(values) is not dict and not isinstance(values, Mapping):
        raise ContractError(f"{where}: params must be an object")
    for key, value in values.items():
        kind = type(value)
        if type(key) is str and (kind in _PLAIN_SCALARS or (kind is float and math.isfinite(value))):
            continue  # the usual case, decided without the checks below
        if not isinstance(key, str):
            raise ContractError(f"{where}: key {shown(key)} is not a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise ContractError(f"{where}.{key}: non-finite float is not allowed")
        if not isinstance(value, (bool, int, float, str)):
            raise ContractError(f"{where}.{key}: {type(value).__name__} is not bool/int/float/str")
    return dict(values)


# ---------------------------------------------------------------- types

# Plain slotted dataclasses: a large study builds a million tasks, and frozen ones cost twice as much.
@dataclass(slots=True)
class UniqueParameterSet:
    param_id: str
    params: dict

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> UniqueParameterSet:
        values = _check_params_values(params, "params")
        return cls(param_id_of(values), values)


@dataclass(slots=True)
class SimTask:
    bundle_ref: str
    entrypoint: str
    params: UniqueParameterSet
    seed: int
    outputs: tuple[str, ...] | None = None

    @property
    def param_id(self) -> str:
        return self.params.param_id

    @property
    def task_id(self) -> str:
        return canonical_task_id(self.bundle_ref, self.entrypoint, self.params.param_id, self.seed)

    def to_json(self) -> dict:
        return {
            "entrypoint": self.entrypoint,
            "bundle_ref": self.bundle_ref,
            # a copy: replicates share one parameter set, a document is a tree
            "params": {"param_id": self.params.param_id, "values": dict(self.params.params)},
            "seed": self.seed,
            "outputs": sorted(self.outputs) if self.outputs is not None else None,
        }


@dataclass(frozen=True)
class SimJob:
    job_id: str
    bundle_ref: str
    tasks: tuple[SimTask, ...]
    priority: int = 0
    metadata: dict = field(default_factory=dict)
    target_spec: dict | None = None
    job_type: str = "simulation"

    @property
    def target_entrypoints(self) -> list[str]:
        data = (self.target_spec or {}).get("data") or {}
        return list(data.get("target_entrypoints") or [])

    def to_json(self) -> dict:
        """Spec JSON in the key order ModelOps uploads it."""
        out: dict[str, Any] = {"job_type": self.job_type, "job_id": self.job_id,
                               "bundle_ref": self.bundle_ref, "priority": self.priority,
                               "metadata": self.metadata}
        if self.target_spec is not None:
            out["target_spec"] = self.target_spec
        out["tasks"] = [t.to_json() for t in self.tasks]
        return out


# ---------------------------------------------------------------- reading specs

def simjob_from_json(doc: Any, *, job_id: str | None = None,
                     tasks: tuple[SimTask, ...] | None = None) -> SimJob:
    """Parse and check a SimJob spec; every param_id is recomputed and must match.

    ``tasks``: the spec's tasks, already read and checked one by one (a streamed spec file);
    ``doc`` then holds the other keys."""
    check_job_header(doc, job_id)
    if tasks is None:
        raw_tasks = doc.get("tasks")
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise ContractError("tasks: must be a non-empty list")
        check_task_count(len(raw_tasks))
        reader = TaskReader()
        tasks = tuple(reader.task(t, i) for i, t in enumerate(raw_tasks))
    elif not tasks:
        raise ContractError("tasks: must be a non-empty list")
    priority = doc.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ContractError(f"priority: {shown(priority)} is not an integer")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ContractError("metadata: must be an object")
    target_spec = doc.get("target_spec")
    if target_spec is not None:
        if not isinstance(target_spec, Mapping):
            raise ContractError("target_spec: must be an object")
        data = target_spec.get("data")
        if isinstance(data, Mapping) and data.get("target_entrypoints") is not None:
            check_target_entrypoints(data["target_entrypoints"], "target_spec.data.target_entrypoints")
    jid, bundle_ref = check_job_id(job_id or doc.get("job_id")), check_bundle_ref(doc.get("bundle_ref"))
    return SimJob(jid, bundle_ref, tasks, priority, dict(metadata),
                  dict(target_spec) if target_spec else None)


def check_job_header(doc: Any, job_id: str | None = None, *, partial: bool = False) -> None:
    """The checks on a SimJob spec that come before its tasks. ``partial``: check only the keys
    present (a streamed spec checks those it has read when its tasks begin)."""
    if not isinstance(doc, Mapping):
        raise ContractError("spec: top level must be a JSON object")
    job_type = doc.get("job_type", "simulation")
    if job_type != "simulation":
        raise ContractError(f"job_type: {shown(job_type)} is not supported (only 'simulation' jobs have "
                            f"outputs to check)")
    if not partial or "bundle_ref" in doc:
        check_bundle_ref(doc.get("bundle_ref"))
    if not partial or job_id or "job_id" in doc:
        check_job_id(job_id or doc.get("job_id"))


class TaskReader:
    """Reads the tasks of one SimJob spec with every rule checked, keeping each task small: what
    repeats across tasks is checked once and shared (bundle refs, entrypoints, output lists, and
    one UniqueParameterSet per parameter set, which its replicates share), so a job of 400,000
    tasks holds 400,000 small objects rather than 400,000 parsed dictionaries."""

    def __init__(self) -> None:
        self._bundle_refs: dict[str, str] = {}                # checked values, also shared by later tasks
        self._entrypoints: dict[str, str] = {}
        self._param_sets: dict[str, UniqueParameterSet] = {}  # canonical values JSON → its set
        self._outputs: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._limit = max_tasks()  # a streamed spec is refused at the first task over it

    def task(self, doc: Any, index: int) -> SimTask:
        if index >= self._limit:
            check_task_count(index + 1)
        where = f"tasks[{index}]"
        if type(doc) is not dict and not isinstance(doc, Mapping):
            raise ContractError(f"{where}: must be an object")
        ref, entrypoint = doc.get("bundle_ref"), doc.get("entrypoint")
        bundle_ref = self._bundle_refs.get(ref) if isinstance(ref, str) else None
        if bundle_ref is None:  # checked values come back as they were given
            bundle_ref = check_bundle_ref(ref, f"{where}.bundle_ref")
            self._bundle_refs[bundle_ref] = bundle_ref
        checked = self._entrypoints.get(entrypoint) if isinstance(entrypoint, str) else None
        if checked is None:
            checked = check_entrypoint(entrypoint, f"{where}.entrypoint")
            self._entrypoints[checked] = checked
        entrypoint = checked
        params = doc.get("params")
        if (type(params) is not dict and not isinstance(params, Mapping)) or "values" not in params:
            raise ContractError(f"{where}.params: must be an object with 'param_id' and 'values'")
        values = _check_params_values(params["values"], f"{where}.params.values")
        # The values were checked flat and finite just above, so they encode without _check_scalar.
        text = _CANONICAL.encode(values)
        param_set = self._param_sets.get(text)
        if param_set is None:
            param_set = self._param_sets[text] = UniqueParameterSet(_param_id_of_canonical(text), values)
        if params.get("param_id") != param_set.param_id:
            raise ContractError(f"{where}.params.param_id: {shown(params.get('param_id'))} does not match "
                                f"the values (recomputed {param_set.param_id})")
        seed = check_seed(doc.get("seed"), f"{where}.seed")
        outputs = doc.get("outputs")
        if outputs is not None:
            if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
                raise ContractError(f"{where}.outputs: must be a list of names or null")
            names = tuple(sorted(outputs))
            outputs = self._outputs.setdefault(names, names)
        return SimTask(bundle_ref, entrypoint, param_set, seed, outputs)


def study_to_simjob(doc: Any, bundle_ref: str | None, *, job_id: str | None = None) -> SimJob:
    """Expand a SimulationStudy spec into the SimJob `mops jobs submit` would build."""
    if not isinstance(doc, Mapping):
        raise ContractError("spec: top level must be a JSON object")
    if not bundle_ref:
        raise ContractError("a SimulationStudy spec needs --bundle REF to become a job")
    bundle_ref = check_bundle_ref(bundle_ref, "--bundle")
    model, scenario = doc.get("model"), doc.get("scenario")
    if not isinstance(model, str) or not _IMPORT_RE.fullmatch(model):
        raise ContractError(f"model: {shown(model)} is not a dotted import path such as 'models.sir' "
                            f"(ModelOps refuses it: 'Invalid import_path format')")
    if not isinstance(scenario, str) or not _SCENARIO_RE.fullmatch(scenario):
        raise ContractError(f"scenario: {shown(scenario)} is not a valid scenario name")
    entrypoint = check_entrypoint(f"{model}/{scenario}")
    n_replicates = doc.get("n_replicates", 1)
    if isinstance(n_replicates, bool) or not isinstance(n_replicates, int) or n_replicates < 1:
        raise ContractError(f"n_replicates: {shown(n_replicates)} is not a positive integer")
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
            raise ContractError("outputs: must be a list of names")
        outputs = tuple(sorted(outputs))
    sets = doc.get("parameter_sets")
    if not isinstance(sets, list) or not sets:
        raise ContractError("parameter_sets: must be a non-empty list")
    user_metadata = doc.get("metadata") or {}
    if not isinstance(user_metadata, Mapping):
        raise ContractError("metadata: must be an object")
    # Checked before anything is expanded: a study is a compact way to ask for 10**12 tasks.
    check_task_count(sum(1 if isinstance(e, Mapping) and "seed" in e else n_replicates for e in sets))
    tasks: list[SimTask] = []
    for i, entry in enumerate(sets):
        where = f"parameter_sets[{i}]"
        if isinstance(entry, Mapping) and "params" in entry and isinstance(entry["params"], Mapping):
            ups = UniqueParameterSet(param_id_of(_check_params_values(entry["params"], where)),
                                     dict(entry["params"]))
            if "seed" in entry:
                seed = check_seed(entry["seed"], f"{where}.seed")
                tasks.append(SimTask(bundle_ref, entrypoint, ups, seed, outputs))
                continue
        elif isinstance(entry, Mapping):
            values = _check_params_values(entry, where)
            ups = UniqueParameterSet(param_id_of(values), values)
        else:
            raise ContractError(f"{where}: must be an object")
        tasks.extend(SimTask(bundle_ref, entrypoint, ups, replicate_seed(ups.param_id, r), outputs)
                     for r in range(n_replicates))
    metadata = {"sampling_method": doc.get("sampling_method", "manual"), "n_parameter_sets": len(sets),
                "n_replicates": n_replicates, "model": model, "scenario": scenario, **user_metadata}
    target_spec = None
    if doc.get("targets"):  # ModelOps writes no target_spec for an empty list
        target_spec = study_target_spec(check_target_entrypoints(doc["targets"], "targets"), metadata)
    jid = check_job_id(job_id) if job_id else job_id_for({"study": doc, "bundle_ref": bundle_ref})
    return SimJob(jid, bundle_ref, tuple(tasks), 0, metadata, target_spec)


def study_target_spec(targets: list[str], metadata: Mapping[str, Any]) -> dict:
    """``target_spec`` of a study with targets, as ModelOps's ``SimulationStudy.to_simjob`` writes it."""
    ids, target_set = metadata.get("target_ids"), metadata.get("target_set")
    return {"data": {"target_entrypoints": list(targets), "target_ids": ids, "target_set": target_set},
            "loss_function": "default", "weights": None,
            "metadata": {"targets": list(targets), "target_ids": ids, "target_set": target_set}}


def is_study(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "parameter_sets" in doc and "tasks" not in doc


def load_spec(doc: Any, *, bundle_ref: str | None = None, job_id: str | None = None) -> SimJob:
    """A SimJob from either spec form. --bundle on a SimJob spec is refused: it names its own."""
    if is_study(doc):
        return study_to_simjob(doc, bundle_ref, job_id=job_id)
    if bundle_ref and isinstance(doc, Mapping) and doc.get("bundle_ref") != bundle_ref:
        raise ContractError("--bundle: a SimJob spec carries its own bundle_ref; --bundle is for study specs")
    return simjob_from_json(doc, job_id=job_id)


def from_contracts_object(job: Any) -> SimJob:
    """Accept a real modelops_contracts.SimJob (or anything shaped like one)."""
    tasks = []
    for task in job.tasks:
        ups = UniqueParameterSet(task.params.param_id, dict(task.params.params))
        outputs = getattr(task, "outputs", None)
        tasks.append(SimTask(task.bundle_ref, task.entrypoint, ups, int(task.seed),
                             tuple(sorted(outputs)) if outputs is not None else None))
    target_spec = getattr(job, "target_spec", None)
    if target_spec is not None and not isinstance(target_spec, Mapping):
        target_spec = {k: getattr(target_spec, k, None)
                       for k in ("data", "loss_function", "weights", "metadata")}
    doc = SimJob(job.job_id, job.bundle_ref, tuple(tasks), getattr(job, "priority", 0),
                 dict(getattr(job, "metadata", None) or {}),
                 dict(target_spec) if target_spec is not None else None)
    return simjob_from_json(doc.to_json())  # re-check every id as for a JSON spec
