"""How a validation will look at the store: the prefixes that cover every expected output (from the
manifest's index alone), the requests each strategy would need, and the strategy chosen. Pure
planning: nothing is read from the store but its cost model, nothing is written."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .errors import JobledgerError
from .layout import Layout
from .ledger import Ledger, SpecNeeded
from .limits import STRATEGIES
from .redact import redact_url
from .stores import ProvenanceStore, normalize_store_url, open_store

# A head probe tells less than a listing (no unexpected directories) and a listing reads whole
# directories in one go, so auto picks head only when it needs clearly fewer requests.
HEAD_ADVANTAGE = 4
SPLIT_MIN_OUTPUTS = 64          # below this a prefix is listed whole
HEX = "0123456789abcdef"         # the first character of a param shard directory
class ValidationError(JobledgerError):
    pass


# ---------------------------------------------------------------- plan

@dataclass
class Plan:
    job_id: str
    store: str
    expected: int
    prefixes: list[str]                      # the fewest prefixes covering every expected output
    parts: list[str]                         # what is listed, in parallel (prefixes split by shard)
    estimates: dict[str, int]                # requests per strategy
    estimate_basis: str
    strategy: str
    reason: str
    notes: list[str] = field(default_factory=list)
    status: str = ""                         # the job's status when planned
    target_dirs: list[str] = field(default_factory=list)  # where the job's aggregations are (its targets)

    def as_dict(self) -> dict:
        return asdict(self)


def _templates(ledger: Ledger, job_id: str) -> list[dict]:
    """The job's task templates with how many outputs and parameter sets each has, read from the
    manifest's (job_id, template_id, param_key) index alone (a scan of a million rows would cost a
    good part of a validation); an aggregation template with its target directory (its rows' path)."""
    rows = ledger.query(
        "SELECT g.template_id, g.outputs AS n, g.params, t.bundle_ref, t.outputs, "
        " (SELECT kind FROM manifest m WHERE m.job_id = :job AND m.template_id = g.template_id LIMIT 1)"
        "  AS kind "
        "FROM (SELECT template_id, count(*) AS outputs, count(DISTINCT param_key) AS params FROM manifest"
        "      WHERE job_id = :job GROUP BY template_id) g "
        "JOIN task_templates t ON t.template_id = g.template_id ORDER BY g.template_id", {"job": job_id})
    for row in rows:
        if row["kind"] == "aggregation":
            row["target_dir"] = ledger.conn.execute(
                "SELECT path FROM manifest WHERE job_id = ? AND template_id = ? LIMIT 1",
                (job_id, row["template_id"])).fetchone()[0]
    return rows


def _cover_prefixes(ledger: Ledger, job: dict, templates: list[dict], target_dirs: list[str]) -> list[str]:
    """Directory prefixes under which every expected output lies: the layout's static prefix
    per bundle for simulations, the target directories for aggregations."""
    layout = Layout.parse(job["layout"])
    # (bundle '': a result path ModelOps reported, its bundle unknown)
    prefixes = {layout.static_prefix(t["bundle_ref"]) for t in templates
                if t["kind"] == "simulation" and t["bundle_ref"]}
    # An aggregation row's path is its target directory, holding one agg_<id> directory per aggregation.
    prefixes.update(f"{target_dir}/" for target_dir in target_dirs)
    if layout.name not in ("token", "bundle") or job["spec_format"] is None:
        # Outputs outside those prefixes (a custom layout, reported paths) are covered by their own parent
        # directory (a preset's simulation paths all start with its static prefix). rtrim(path, <every
        # character but '/'>) keeps the path up to its last '/': the parent directory.
        covered = " OR ".join("substr(path, 1, ?) = ?" for _ in prefixes) or "0"
        uncovered = ledger.query(
            f"SELECT DISTINCT rtrim(path, replace(path, '/', '')) AS d FROM manifest "
            f"WHERE job_id = ? AND kind = 'simulation' AND NOT ({covered})",
            [job["job_id"]] + [x for p in sorted(prefixes) for x in (len(p), p)])
        prefixes.update(r["d"] for r in uncovered)
    # Drop a prefix that another one already covers. In sorted order every prefix that starts with q
    # comes right after q, so the last prefix kept is the only one that can cover the next.
    kept: list[str] = []
    for p in sorted(prefixes):
        if not (kept and p.startswith(kept[-1])):
            kept.append(p)
    return kept


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValidationError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    return strategy


def make_plan(ledger: Ledger, job: dict, store: ProvenanceStore, strategy: str = "auto") -> Plan:
    check_strategy(strategy)
    job_id = job["job_id"]
    templates = _templates(ledger, job_id)
    expected = sum(t["n"] for t in templates)
    target_dirs = sorted({t["target_dir"] for t in templates if t["kind"] == "aggregation"})
    prefixes = _cover_prefixes(ledger, job, templates, target_dirs) if expected else []
    # Only a layout's static prefix ends where the hash-named shard directories begin (a job without a
    # spec is covered by its reported paths' parent directories instead).
    splittable = job["layout"] in ("token", "bundle") and job["spec_format"] is not None
    n = max(1, len(prefixes))
    # What a listing would see: per output its markers and artifacts; per parent directory (one per
    # parameter set and bundle, one per aggregation target) the directories above it.
    declared = [json.loads(t["outputs"]) for t in templates]
    names = sum(t["n"] * (2 + (1 if d is None else len(d)))
                for t, d in zip(templates, declared, strict=True)) / n
    parents = sum(t["params"] if t["kind"] == "simulation" else 1 for t in templates)
    dirs = (expected + 3 * parents + 1) / n
    parts: list[str] = []
    list_estimate = 0
    for prefix in prefixes:
        whole = store.list_cost(int(names), int(dirs))
        # Shard directories are hash-named, so 16 hex sub-prefixes cover them and list in parallel.
        if splittable and "/sims/" in prefix and expected >= SPLIT_MIN_OUTPUTS and whole >= 2:
            parts.extend(prefix + c for c in HEX)
            list_estimate += sum(store.list_cost(int(names / 16), int(dirs / 16) + 1) for _ in HEX)
        else:
            parts.append(prefix)
            list_estimate += whole
    basis = "expected outputs"
    previous = ledger.query("SELECT requests FROM validation_runs WHERE job_id = ? AND strategy = 'list' "
                            "AND store_url = ? AND outcome IS NOT NULL AND outcome <> 'error' "
                            "ORDER BY run_id DESC LIMIT 1", (job_id, job["store_url"]))
    if previous:
        list_estimate, basis = previous[0]["requests"], "previous list run"
    # scan reads what list reads, except each expected output's own directory, where it probes one or
    # two marker files instead (a directory store answers those locally; an object store would not).
    estimates = {"scan": int(list_estimate) + expected, "list": int(list_estimate), "head": expected}
    if strategy == "auto":
        chosen = "head" if estimates["head"] * HEAD_ADVANTAGE < estimates["list"] else "list"
        why = (f"auto: head needs {estimates['head']} requests, list {estimates['list']} "
               f"(head is chosen below 1/{HEAD_ADVANTAGE} of list)")
        if chosen == "list" and store.page_size == 0 and not target_dirs:
            chosen = "scan"
            why += ("; a directory store is scanned (the list walk, probing the expected result directories "
                    "instead of reading them)")
    elif strategy == "scan" and target_dirs:
        raise ValidationError("--strategy scan cannot decide aggregations (they need the output names each "
                              "replicate returned, which only a listing shows): use list or auto")
    else:
        chosen, why = strategy, f"requested --strategy {strategy}"
    notes = []
    if chosen == "head":
        notes.append("head probes each expected output: unexpected directories are not looked for")
    if chosen == "scan":
        notes.append("scan probes the marker files of each expected result directory instead of reading "
                     "it: a result directory nested inside one is not looked for")
    return Plan(job_id, redact_url(job["store_url"] or ""), expected, prefixes,
                parts if chosen != "head" else [],
                estimates, basis, chosen, why, notes, job["status"], target_dirs)


def job_to_check(ledger: Ledger, job_id: str) -> dict:
    """The job row, with the store it is checked in: a job ModelOps created without naming its results path
    is looked for in the default store (JOBLEDGER_STORE, MODELOPS_STORAGE_DIR), as ModelOps's own runner
    writes there."""
    job = ledger.job(job_id)
    if job["spec_format"] is None and not job["store_url"]:
        job["store_url"] = normalize_store_url(None)
    return job


def explain(ledger: Ledger, job_id: str, strategy: str = "auto") -> Plan:
    """The plan of a validation (prefixes, estimated requests per strategy, choice); touches nothing."""
    job = job_to_check(ledger, job_id)
    plan = make_plan(ledger, job, open_store(job["store_url"]), strategy)
    if not plan.expected:
        plan.notes.append(str(SpecNeeded(job_id, "no expected outputs known", "validate"))
                          if job["spec_format"] is None else
                          "the job has no expected outputs: validation would be skipped")
    return plan
