"""Where ModelOps workers write results: the provenance path DSL and its presets.

Templates use the ModelOps DSL: ``{var}``, ``{var[:n]}``, ``{hash(var)[:n]}`` (BLAKE2b-256
hex) and ``{shard(var,depth,width)}``. Variables: ``bundle_digest`` (text after the first
':' of the bundle_ref, as the worker computes it), ``param_id``, ``seed``, ``target``,
``aggregation_id``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .contracts import ContractError
from .errors import shown
from .hashing import blake2b_hex
from .paths import unsafe_reason

_EXPR = re.compile(r"\{([^{}]*)\}")
_VAR = re.compile(r"([a-z_]+)(?:\[:(\d+)\])?")  # matched with fullmatch, as are the two below
_HASH = re.compile(r"hash\(([a-z_]+)\)(?:\[:(\d+)\])?")
_SHARD = re.compile(r"shard\(([a-z_]+),(\d+),(\d+)\)")
KNOWN_VARS = {"bundle_digest", "model_digest", "param_id", "seed", "target", "aggregation_id"}

SIM_TEMPLATE = "sims/{bundle_digest[:12]}/{shard(param_id,2,2)}/params_{param_id[:8]}/seed_{seed}"
AGG_TEMPLATE = "aggs/{bundle_digest[:12]}/target_{target}/agg_{aggregation_id}"

# Files a worker writes into one result directory.
RESULT_FILE = "result.json"
METADATA_FILE = "metadata.json"
ERROR_FILE = "error_details.arrow"

# What an output's result directory says about it, from the names of the files in it. The
# worker writes result.json last (temp file + rename); an error result also writes
# error_details.arrow. This is the one definition of an output's state: the validation SQL
# is generated from OUTPUT_STATE_RULES (observe.state_case_sql) and the idempotent runner
# calls output_state; a test checks both agree on the sample tree.
MISSING, VERIFIED, ERRORED, INCOMPLETE = "missing", "verified", "errored", "incomplete"
OUTPUT_STATE_RULES = ((ERROR_FILE, ERRORED), (RESULT_FILE, VERIFIED))  # first file present decides
MARKER_FILES = tuple(name for name, _ in OUTPUT_STATE_RULES)


def output_state(names) -> str:
    """missing (no files), else the state of the first marker file present, else incomplete."""
    if not names:
        return MISSING
    for name, state in OUTPUT_STATE_RULES:
        if name in names:
            return state
    return INCOMPLETE


ARTIFACT_PREFIX = "artifact_"


def artifact_file(output_name: str) -> str:
    return "artifact_metadata.json" if output_name == "metadata" else f"{ARTIFACT_PREFIX}{output_name}.arrow"


def returned_outputs(names) -> str | None:
    """The output names a worker wrote into one result directory (``artifact_<name>.<ext>``: .arrow,
    .parquet, .json), sorted and comma-joined as in its SimReturn task id; None when there are none."""
    outputs = {n[len(ARTIFACT_PREFIX):n.rindex(".")] for n in names
               if n.startswith(ARTIFACT_PREFIX) and "." in n[len(ARTIFACT_PREFIX):]}
    return ",".join(sorted(outputs)) if outputs else None


class LayoutError(ContractError):
    pass


def bundle_digest(bundle_ref: str) -> str:
    """The worker's digest segment: everything after the FIRST ':' of the bundle_ref."""
    return bundle_ref.split(":", 1)[1] if ":" in bundle_ref else bundle_ref


@lru_cache(maxsize=64)
def _compile(template: str):
    """Split a template into literal text and render functions, checking every expression."""
    parts: list = []
    pos = 0
    for match in _EXPR.finditer(template):
        parts.append(template[pos:match.start()])
        parts.append(_compile_expr(match.group(1), template))
        pos = match.end()
    tail = template[pos:]
    if "{" in tail or "}" in tail or any("{" in p or "}" in p for p in parts if isinstance(p, str)):
        raise LayoutError(f"layout: unbalanced braces in {shown(template)}")
    parts.append(tail)
    return tuple(parts)


def _compile_expr(expr: str, template: str):
    if m := _VAR.fullmatch(expr):
        name, n = m.group(1), m.group(2)
        _known(name, template)
        end = int(n) if n else None
        return name, lambda ctx: str(ctx[name])[:end]
    if m := _HASH.fullmatch(expr):
        name, n = m.group(1), m.group(2)
        _known(name, template)
        end = int(n) if n else None
        return name, lambda ctx: blake2b_hex(str(ctx[name]))[:end]
    if m := _SHARD.fullmatch(expr):
        name, depth, width = m.group(1), int(m.group(2)), int(m.group(3))
        _known(name, template)
        def shard(ctx) -> str:
            digest = blake2b_hex(str(ctx[name]))
            return "/".join(digest[i * width:(i + 1) * width] for i in range(depth))
        return name, shard
    raise LayoutError(f"layout: invalid expression {{{expr}}} in {shown(template)}")


def _partly_rendered(parts, ctx: dict) -> list:
    """``parts`` with those whose variable ``ctx`` holds rendered, adjacent text joined and empty text
    dropped; the others stay (name, render) pairs."""
    out: list = []
    for part in parts:
        if isinstance(part, str) or part[0] in ctx:
            text = part if isinstance(part, str) else part[1](ctx)
            if out and isinstance(out[-1], str):
                out[-1] += text
            elif text:
                out.append(text)
        else:
            out.append(part)
    return out


@lru_cache(maxsize=256)
def _bundle_parts(template: str, bundle_ref: str) -> tuple:
    """The template's parts with what depends only on the bundle already rendered: a manifest
    renders one path per output, and only the param and seed parts differ between them."""
    digest = bundle_digest(bundle_ref)
    return tuple(_partly_rendered(_compile(template), {"bundle_digest": digest, "model_digest": digest}))


def _known(name: str, template: str) -> None:
    if name not in KNOWN_VARS:
        raise LayoutError(f"layout: unknown variable {shown(name)} in {shown(template)} "
                          f"(known: {', '.join(sorted(KNOWN_VARS))})")


def render(template: str, context: dict) -> str:
    return "".join(p if isinstance(p, str) else p[1](context) for p in _compile(template))


@dataclass(frozen=True)
class Layout:
    """A named layout: the preset ``token``/``bundle`` schemas or a custom sim template."""
    name: str
    sim_template: str
    agg_template: str | None

    @classmethod
    def parse(cls, spec: str | None) -> Layout:
        spec = spec or "token"
        if spec in ("token", "bundle"):
            return cls(spec, f"{spec}/v1/{SIM_TEMPLATE}", f"{spec}/v1/{AGG_TEMPLATE}")
        if "{" not in spec:
            raise LayoutError(f"layout: {shown(spec)} is not 'token', 'bundle' or a path template")
        _compile(spec)
        for required in ("param_id", "seed"):
            if required not in spec:
                raise LayoutError(f"layout: template {shown(spec)} must use {{{required}}} to keep outputs "
                                  f"apart")
        layout = cls(spec, spec, None)
        # Every value a variable takes renders as hex or digits, so a sample path shows whether the
        # template itself (its literal text, or a slice such as {param_id[:0]}) leaves the store.
        sample = layout.sim_path("sha256:" + "0" * 64, "0" * 64, 0)
        reason = unsafe_reason(sample)
        if reason is not None:
            raise LayoutError(f"layout: template {shown(spec)} gives paths like {shown(sample)}, which "
                              f"{reason}; output paths must stay inside the store")
        return layout

    def sim_context(self, bundle_ref: str, param_id: str, seed: int | None) -> dict:
        digest = bundle_digest(bundle_ref)
        return {"bundle_digest": digest, "model_digest": digest, "param_id": param_id, "seed": seed}

    def sim_path(self, bundle_ref: str, param_id: str, seed: int) -> str:
        return render(self.sim_template, self.sim_context(bundle_ref, param_id, seed))

    def sim_path_for_param(self, bundle_ref: str, param_id: str) -> Callable[[int], str]:
        """A function seed -> path with everything that does not depend on the seed rendered once.

        Registration renders one path per replicate; hashing the param_id once per param
        set instead of once per output is most of the cost of a large manifest.
        """
        fixed: list[Any] = [part if isinstance(part, str) else part[1] for part in
                 _partly_rendered(_bundle_parts(self.sim_template, bundle_ref), {"param_id": param_id})]
        if len(fixed) == 2 and isinstance(fixed[0], str) and not isinstance(fixed[1], str):
            head, seed_part = fixed
            return lambda seed: head + seed_part({"seed": seed})
        return lambda seed: "".join(p if isinstance(p, str) else p({"seed": seed}) for p in fixed)

    def target_dir(self, bundle_ref: str, target_entrypoint: str) -> str:
        """The directory holding every aggregation of one target: ``…/aggs/<d12>/target_<target>``."""
        return self.agg_path(bundle_ref, target_entrypoint, "").rpartition("/")[0]

    def agg_path(self, bundle_ref: str, target_entrypoint: str, aggregation_id: str) -> str:
        if self.agg_template is None:
            raise LayoutError("layout: a custom template has no aggregation path; use 'token' or 'bundle' "
                              "for jobs with targets")
        digest = bundle_digest(bundle_ref)
        return render(self.agg_template, {"bundle_digest": digest, "model_digest": digest,
                                          "target": target_entrypoint.replace("/", "_"),
                                          "aggregation_id": aggregation_id})

    def static_prefix(self, bundle_ref: str) -> str:
        """The directory part of every sim path of this bundle before any per-task expression."""
        ctx = self.sim_context(bundle_ref, "", 0)
        out = []
        for part in _compile(self.sim_template):
            if isinstance(part, str):
                out.append(part)
            elif part[0] in ("bundle_digest", "model_digest"):
                out.append(part[1](ctx))
            else:
                break
        prefix = "".join(out)
        return prefix[: prefix.rfind("/") + 1]


def warn_for_bundle(bundle_ref: str) -> str | None:
    """A note when the worker's segment contains '/' (a registry with a port, host:5000/...).

    Returned, not emitted through ``warnings``: callers put it in their result and the CLI
    prints it as a ``warning:`` line."""
    segment = bundle_digest(bundle_ref)[:12]
    if "/" in segment:
        message = (f"bundle_ref {shown(bundle_ref)} has a registry port, so workers write under "
                   f"'{segment}' (a segment containing '/'); jobledger reproduces that path")
        return message
    return None
