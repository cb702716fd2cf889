"""Streaming spec files: the same job, stored spec and errors as reading the whole document."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobledger import specfile
from jobledger.contracts import ContractError, UniqueParameterSet, load_spec
from jobledger.registration import read_spec
from jobledger.specfile import StoredSpec, load_spec_file

BUNDLES = ["sha256:" + "a" * 64, "reg.example:5000/m@sha256:" + "b" * 64]
ENTRYPOINTS = ["models.sir/baseline", "pkg.mod:run", "mödel.x/y"]  # the last is refused: not ASCII-dotted


def canonical(doc) -> bytes:
    """The definition the ledger has always hashed: json.dumps with sorted keys, compact."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def whole_document_errors(text: str, name: str) -> str | None:
    """What reading the whole document reports (read_spec: json.loads, then the contract checks)."""
    assert Path(name).read_text(encoding="utf-8") == text
    try:
        load_spec(read_spec(name))
    except ContractError as exc:
        return str(exc)
    return None


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    """Chunks of a few characters, so that every value straddles chunk boundaries somewhere."""
    monkeypatch.setattr(specfile, "CHUNK", 7)
    monkeypatch.setattr(specfile, "FLUSH", 50)


values = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=6),
)
params = st.dictionaries(st.text(min_size=1, max_size=5), values, max_size=3)


@st.composite
def simjob_docs(draw):
    """SimJob specs in any key order, with extra keys at both levels and any formatting."""
    job_bundle = draw(st.sampled_from(BUNDLES))
    param_sets = [UniqueParameterSet.from_params(p) for p in draw(st.lists(params, min_size=1, max_size=3))]
    tasks = []
    for _ in range(draw(st.integers(1, 6))):
        ups = draw(st.sampled_from(param_sets))
        task = {
            "entrypoint": draw(st.sampled_from(ENTRYPOINTS[:2])),
            "bundle_ref": draw(st.sampled_from(BUNDLES)),
            "params": {"param_id": ups.param_id, "values": ups.params},
            "seed": draw(st.integers(0, 2**64 - 1)),
            "outputs": draw(
                st.one_of(
                    st.none(), st.lists(st.sampled_from(["incidence", "prev", "é"]), min_size=1, max_size=3)
                )
            ),
        }
        if draw(st.booleans()):
            task["extra"] = draw(values)
        if draw(st.booleans()):
            task["params"]["note"] = "x"
        keys = draw(st.permutations(list(task)))
        tasks.append({k: task[k] for k in keys})
    doc = {
        "job_type": "simulation",
        "job_id": "job-0badc0de",
        "bundle_ref": job_bundle,
        "priority": 0,
        "metadata": draw(st.dictionaries(st.text(max_size=3), values, max_size=2)),
        "tasks": tasks,
    }
    for extra in draw(
        st.lists(st.sampled_from(["aaa", "tasks_after", "zzz", "target_spec", "Tasks"]), unique=True)
    ):
        doc[extra] = {"data": {"target_entrypoints": ["t.mod/x"]}} if extra == "target_spec" else draw(values)
    keys = draw(st.permutations(list(doc)))
    return {k: doc[k] for k in keys}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=simjob_docs(),
    indent=st.sampled_from([None, 1, "\t"]),
    separators=st.sampled_from([None, (",", ":")]),
    ascii_only=st.booleans(),
)
def test_streamed_simjob_is_the_whole_document_read(tmp_path, doc, indent, separators, ascii_only):
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(doc, indent=indent, separators=separators, ensure_ascii=ascii_only), encoding="utf-8"
    )
    loaded = load_spec_file(path)
    expected = load_spec(doc)
    assert loaded.format == "simjob"
    assert loaded.job.to_json() == expected.to_json()
    assert loaded.job.tasks == expected.tasks
    assert gzip.decompress(loaded.stored.gz).decode() == path.read_text(encoding="utf-8")  # as submitted
    assert loaded.stored.sha256 == hashlib.sha256(canonical(doc)).hexdigest() == StoredSpec.of(doc).sha256
    assert loaded.stored.document() == doc
    assert json.dumps(loaded.stored.document()) == json.dumps(doc)  # every key order kept


def test_replicates_share_one_parameter_set_and_strings(tmp_path):
    ups = UniqueParameterSet.from_params({"beta": 0.5})
    task = {
        "bundle_ref": BUNDLES[0],
        "entrypoint": "m.x/y",
        "params": {"param_id": ups.param_id, "values": ups.params},
        "outputs": ["a"],
    }
    doc = {
        "job_id": "job-0badc0de",
        "bundle_ref": BUNDLES[0],
        "tasks": [dict(task, seed=s) for s in range(3)],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc))
    tasks = load_spec_file(path).job.tasks
    assert tasks[0].params is tasks[1].params is tasks[2].params
    assert tasks[0].outputs is tasks[2].outputs and tasks[0].bundle_ref is tasks[2].bundle_ref


def test_a_study_file_is_read_as_before(tmp_path, golden):
    study = golden["study_spec_example"]
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study, indent=2))
    loaded = load_spec_file(path, bundle=BUNDLES[0])
    assert loaded.format == "study"
    assert loaded.job.to_json() == load_spec(study, bundle_ref=BUNDLES[0]).to_json()
    assert loaded.stored == StoredSpec(
        hashlib.sha256(canonical({"study": study, "bundle_ref": BUNDLES[0]})).hexdigest(), loaded.stored.gz
    )


def test_a_later_duplicate_tasks_key_wins_as_in_json(tmp_path):
    ups = UniqueParameterSet.from_params({"x": 1})
    task = {
        "bundle_ref": BUNDLES[0],
        "entrypoint": "m.x/y",
        "params": {"param_id": ups.param_id, "values": ups.params},
        "seed": 1,
        "outputs": None,
    }
    text = (
        f'{{"job_id": "job-0badc0de", "bundle_ref": "{BUNDLES[0]}", "tasks": [{json.dumps(task)}], '
        f'"tasks": [{json.dumps(dict(task, seed=2))}, {json.dumps(dict(task, seed=3))}]}}'
    )
    path = tmp_path / "spec.json"
    path.write_text(text)
    loaded = load_spec_file(path)
    assert [t.seed for t in loaded.job.tasks] == [2, 3]
    assert loaded.stored.sha256 == hashlib.sha256(canonical(json.loads(text))).hexdigest()
    path.write_text(
        text.replace('"tasks": [{', '"tasks": "none", "x": [{', 1).replace(', "tasks": [', ', "tasks": [', 1)
    )
    assert [t.seed for t in load_spec_file(path).job.tasks] == [2, 3]


GOOD = (
    '{"job_id": "job-0badc0de", "bundle_ref": "' + BUNDLES[0] + '", "tasks": [\n'
    '  {"bundle_ref": "' + BUNDLES[0] + '", "entrypoint": "m.x/y", "seed": 1, "outputs": null,\n'
    '   "params": {"param_id": "' + UniqueParameterSet.from_params({}).param_id + '", "values": {}}}\n]}\n'
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "[",
        "{",
        '{"job_id"',
        '{"job_id": ',
        '{"a": 1 "b": 2}',
        "{1: 2}",
        '{"a": 1,}',
        '{"a": tru}',
        GOOD[:-5],
        GOOD[: len(GOOD) // 2],
        GOOD.replace("null", "nul"),
        GOOD.replace('"seed": 1,', '"seed": 1'),
        GOOD.replace("}\n]}", "},\n]}"),
        GOOD + "x",
        GOOD.replace("\n]}", "\n] x}"),
        GOOD.replace("[\n", "[\n 5,"),
        GOOD.replace('"seed": 1', '"seed": -1'),
        GOOD.replace('"values": {}', '"values": {"a": []}'),
        GOOD.replace('"entrypoint": "m.x/y"', '"entrypoint": "bad"'),
        GOOD.replace("job-0badc0de", "job-1"),
        GOOD.replace("\n", ""),
        GOOD.replace('"job_id": "job-0badc0de", ', "") + " ",
        GOOD.replace('"tasks": [', '"job_type": "x", "tasks": ['),
        '{"job_id": "job-0badc0de", "bundle_ref": "' + BUNDLES[0] + '", "tasks": []}',
        "[1, 2]",
        '"just a string"',
        GOOD.replace("m.x/y", "m.x/\\ud800"),  # lone surrogates: text that can be neither hashed nor stored
        GOOD.replace("\n]}", '\n], "metadata": {"note": "\\udc00"}}'),
        GOOD.replace("\n]}", '\n], "metadata": {"note": "\\ud83d\\ude00"}}'),  # a pair is text
    ],
)
def test_errors_are_those_of_a_whole_document_read(tmp_path, text):
    path = tmp_path / "spec.json"
    path.write_text(text, encoding="utf-8")
    expected = whole_document_errors(text, str(path))
    if expected is None:
        load_spec_file(path)
        return
    with pytest.raises(ContractError) as caught:
        load_spec_file(path)
    assert str(caught.value) == expected


def test_problems_are_reported_in_file_order(tmp_path):
    """Streaming checks each task as it is read: a bad task before a syntax error is reported first."""
    path = tmp_path / "spec.json"
    path.write_text(GOOD.replace('"seed": 1', '"seed": -1') + "garbage")
    with pytest.raises(ContractError, match=r"^tasks\[0\]\.seed: -1 is not an integer"):
        load_spec_file(path)


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(ContractError, match="cannot read spec .*missing.json"):
        load_spec_file(tmp_path / "missing.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"job_id": "\xe9"}')
    with pytest.raises(ContractError, match="cannot read spec .*latin1.json"):
        load_spec_file(bad)
