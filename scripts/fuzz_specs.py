#!/usr/bin/env python3
"""Fuzz the CLI with malformed specs, layouts, store URLs and registry blobs (hypothesis), for a
bounded time, and check that it never prints a traceback and never writes outside its sandbox.

    python scripts/fuzz_specs.py [--seconds 60] [--seed N]

Every example runs real CLI commands (``register``, ``validate --deep``, ``pull``, ``sql``) in-process
through click's runner against a sandbox under a fresh temporary directory: ``ledger.db``, a store
holding a copy of a worker-written result tree, and a local registry holding a pushed job whose
blobs the example corrupts. An example fails when a command raises anything but a clean exit
(a traceback), exits with a status other than 0-4, prints more than one ``error:`` line, or when
any file appears or changes outside the sandbox's own files (a canary directory beside the
sandbox, and the sandbox's parent, are compared before and after). Prints the cases tried, how
many were refused with a one-line error, how many were accepted, and exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jobledger.cli import main  # noqa: E402
from jobledger.stores.local import write_result_dir  # noqa: E402

HEX = "ab" * 32
BUNDLE = f"sha256:{HEX}"
NASTY_TEXT = ["..", "../", "/", "//", "\n", "\x00", "\\", "?sig=SECRET", "{param_id[:0]}", "{seed}", "{param_id}",
              "{hash(seed)[:4]}", "{shard(param_id,2,2)}", "{nope}", "{", "}", "é", "\udcff", " ", "x" * 300]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                      st.floats(allow_nan=False), st.text(max_size=20), st.sampled_from(NASTY_TEXT))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                          max_leaves=12)
nasty_string = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(NASTY_TEXT), max_size=6).map("".join))


def base_simjob(job_id: str = "job-00f0f0f0") -> dict:
    from jobledger.contracts import param_id_of
    params = {"beta": 0.5}
    return {"job_type": "simulation", "job_id": job_id, "bundle_ref": BUNDLE, "priority": 0, "metadata": {},
            "tasks": [{"entrypoint": "models.sir.SIR/baseline", "bundle_ref": BUNDLE, "seed": s,
                       "params": {"param_id": param_id_of(params), "values": params}, "outputs": ["prevalence"]}
                      for s in (1, 2)]}


def base_study() -> dict:
    return {"model": "models.sir.SIR", "scenario": "baseline", "n_replicates": 2,
            "parameter_sets": [{"beta": 0.5}, {"params": {"beta": 0.7}, "seed": 3}], "outputs": ["prevalence"],
            "targets": ["models.targets.T/prevalence"]}


@st.composite
def mutated(draw, doc):
    """``doc`` with a few paths replaced, deleted or set to hostile values."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 4))):
        node, key = doc, None
        path = []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append(key)
            if not isinstance(node[key], (dict, list)):
                break
            node = node[key]
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "nasty"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "nasty":
            parent[path[-1]] = draw(st.sampled_from(NASTY_TEXT + [10**40, -1, [], {}]))
        else:
            parent[path[-1]] = draw(json_value)
    return doc


spec_text = st.one_of(
    mutated(base_simjob()).map(json.dumps),
    mutated(base_study()).map(json.dumps),
    st.sampled_from(["", "{", "[1]", "null", '{"tasks": ' + "[" * 50_000 + "]" * 50_000 + "}",
                     '{"job_id": "job-00f0f0f0", "tasks": [{"params": {"values": {"n": ' + "9" * 5000 + "}}}]}"]),
    json_value.map(json.dumps),
)
layout = st.one_of(st.sampled_from(["token", "bundle", None]),
                   st.lists(st.sampled_from(NASTY_TEXT + ["a", "seed_", "params_"]), min_size=1, max_size=6)
                   .map("/".join))
# URL secrets are spelled apart from the specs' hostile text, so that echoing a spec value is not taken for a leak.
store_url = st.one_of(st.none(), st.sampled_from(["az://c/p?sig=URLSECRET",
                                                  "https://a.blob.core.windows.net/c?sv=1&sig=URLSECRET",
                                                  "ftp://x/y", "file://", "", "relative/dir"]), nasty_string)


class Sandbox:
    def __init__(self, parent: Path):
        self.parent = parent
        self.root = parent / "sandbox"
        self.canary = parent / "canary"
        self.canary.mkdir()
        self.root.mkdir()
        self.db = self.root / "ledger.db"
        self.store = self.root / "store"
        self.registry = self.root / "registry"
        os.environ["JOBLEDGER_DB"] = str(self.db)
        os.environ.pop("JOBLEDGER_REGISTRY", None)
        os.environ["JOBLEDGER_STORE"] = str(self.store)
        self._seed_registry()

    def _seed_registry(self) -> None:
        spec = self.root / "seed.json"
        spec.write_text(json.dumps(base_simjob("job-00e0e0e0")))
        self.run(["register", str(spec), "--store", str(self.store)], check=True)
        for row in json.loads(self.run(["sql", "--json", "SELECT path FROM outputs"], check=True).stdout):
            write_result_dir(self.store / row["path"], bundle_ref=BUNDLE, entrypoint="models.sir.SIR/baseline",
                             params={"beta": 0.5}, param_id="x", seed=1, outputs={"prevalence": b"abc"})
        self.run(["validate", "job-00e0e0e0"])  # so that the registry also holds observations
        self.run(["--registry", str(self.registry), "push"], check=True)
        self.blobs = {p: p.read_bytes() for p in (self.registry / "jobs").rglob("*")
                      if p.is_file() and not p.name.startswith(".")}

    def outside(self) -> list[tuple[str, int, float]]:
        """Everything beside the sandbox (and in the canary) that a stray write would change."""
        seen = []
        for base in (self.parent, self.canary):
            for entry in os.scandir(base):
                if entry.path != str(self.root):
                    st_ = entry.stat(follow_symlinks=False)
                    seen.append((entry.path, st_.st_size, st_.st_mtime))
        return sorted(seen)

    def run(self, args: list[str], check: bool = False, input: str | None = None):
        result = CliRunner().invoke(main, args, catch_exceptions=True, input=input)
        if check and result.exit_code != 0:
            raise RuntimeError(f"set-up command {args} failed: {result.output}")
        return result


class Tally:
    def __init__(self) -> None:
        self.tried = self.refused = self.accepted = 0
        self.failures: list[str] = []

    def check(self, box: Sandbox, args: list[str], result, before) -> None:
        self.tried += 1
        problem = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            frames = [f for f in traceback.extract_tb(result.exception.__traceback__) if "jobledger" in f.filename]
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            problem = "".join(traceback.format_exception_only(result.exception)).strip() + where
        elif "Traceback" in result.output:
            problem = "a traceback was printed"
        elif result.exit_code not in (0, 1, 2, 3, 4):
            problem = f"exit status {result.exit_code}"
        elif sum(line.startswith("error:") for line in result.stderr.splitlines()) > 1 or (
                result.exit_code == 1 and not result.stderr.startswith("error: ")):
            problem = f"not a one-line error: {result.stderr[:200]!r}"
        elif "URLSECRET" in result.output:
            problem = "a secret in a URL was echoed"
        elif box.outside() != before:
            problem = "a file outside the sandbox changed"
        if problem:
            self.failures.append(f"{[a[:80] for a in args]}: {problem}")
        elif result.exit_code == 0:
            self.accepted += 1
        else:
            self.refused += 1


def fuzz(seconds: float, seed: int | None) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="jobledger-fuzz-") as tmp:
        box = Sandbox(Path(tmp))
        counter = iter(range(10**9))

        def register_case(text: str, lay: str | None, store: str | None) -> None:
            spec = box.root / f"spec-{next(counter)}.json"
            spec.write_text(text, encoding="utf-8", errors="surrogateescape")
            args = ["register", str(spec), "--bundle", BUNDLE]
            args += ["--layout", lay] if lay is not None else []
            args += ["--store", store] if store is not None else []
            before = box.outside()
            tally.check(box, args, box.run(args), before)
            spec.unlink()

        def validate_case() -> None:
            for job in json.loads(box.run(["sql", "--json", "SELECT job_id FROM jobs"]).stdout or "[]")[:3]:
                args = ["validate", job["job_id"], "--force", "--deep", "--checksums"]
                before = box.outside()
                tally.check(box, args, box.run(args), before)

        def pull_case(name: str, data: bytes) -> None:
            target = next(p for p in box.blobs if p.name == name)
            target.write_bytes(data)
            fresh = box.root / "analyst.db"
            args = ["--db", str(fresh), "--registry", str(box.registry), "pull"]
            before = box.outside()
            tally.check(box, args, box.run(args), before)
            target.write_bytes(box.blobs[target])
            for suffix in ("", "-wal", "-shm"):
                Path(str(fresh) + suffix).unlink(missing_ok=True)

        blob_bytes = st.one_of(st.binary(max_size=200),
                               st.binary(max_size=200).map(gzip.compress),
                               json_value.map(lambda v: gzip.compress(json.dumps(v).encode())),
                               st.just(gzip.compress(b" " * (80 << 20), 9)))  # ~80 KB inflating to 80 MB

        @st.composite
        def manifest_edit(draw):
            text = gzip.decompress(next(d for p, d in box.blobs.items() if p.name == "manifest.jsonl.gz")).decode()
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            doc = json.loads(lines[i])
            lines[i] = json.dumps(draw(mutated(doc if isinstance(doc, (dict, list)) else [doc])))
            return gzip.compress("\n".join(lines).encode())

        cfg = settings(max_examples=25, deadline=None, database=None, derandomize=False,
                       suppress_health_check=list(HealthCheck))

        @cfg
        @given(spec_text, layout, store_url)
        def specs(text, lay, store):
            register_case(text, lay, store)

        @cfg
        @given(st.sampled_from(["manifest.jsonl.gz", "observed.json.gz", "state.json"]), blob_bytes)
        def blobs(name, data):
            pull_case(name, data)

        @cfg
        @given(manifest_edit())
        def manifests(data):
            pull_case("manifest.jsonl.gz", data)

        rounds = [specs, blobs, manifests, validate_case]
        while time.monotonic() < deadline:
            chosen = rng.choice(rounds)
            if chosen is validate_case:
                chosen()
            else:  # hypothesis draws from a seed taken from --seed: a run can be repeated
                hypothesis_seed(rng.getrandbits(64))(chosen)()
    return tally


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args()
    started = time.monotonic()
    tally = fuzz(options.seconds, options.seed)
    print(f"cases tried: {tally.tried} in {time.monotonic() - started:.0f} s; refused with one line: "
          f"{tally.refused}; accepted: {tally.accepted}; failures: {len(tally.failures)}")
    for failure in tally.failures[:20]:
        print(f"FAIL {failure}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main_())
