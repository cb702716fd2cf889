"""Identities, spec parsing and contract rules against the vectors produced by real ModelOps code."""
from __future__ import annotations

import json

import pytest

from jobledger import contracts
from jobledger.contracts import ContractError
from jobledger.layout import Layout, LayoutError, bundle_digest
from jobledger.manifest import expected_outputs, runner_seeds


def test_canonical_json_and_param_id_match_golden(golden):
    for vector in golden["canonical_json"]:
        assert contracts.canonical_json(vector["params"]) == vector["canonical_json"]
    for vector in golden["param_id"]:
        assert contracts.param_id_of(vector["params"]) == vector["param_id"]


def test_one_and_one_point_zero_and_negative_zero_are_distinct(golden):
    ids = {json.dumps(v["params"]): v["param_id"] for v in golden["param_id"]}
    assert ids['{"x": 1}'] != ids['{"x": 1.0}']
    assert ids['{"x": -0.0}'] != ids['{"x": 0.0}']


def test_task_ids_bundle12_sim_return_ids_and_aggregation_ids(golden):
    for v in golden["task_id"]:
        assert contracts.canonical_task_id(v["bundle_ref"], v["entrypoint"], v["param_id"], v["seed"]) == v["canonical_task_id"]
    for v in golden["bundle12"]:
        assert contracts.bundle12(v["bundle_ref"]) == v["bundle12"]
    for v in golden["sim_return_task_id"]:
        assert contracts.sim_return_task_id(v["param_id"], v["seed"], v["output_names"]) == v["task_id"]
    for v in golden["aggregations"]:
        assert contracts.aggregation_id(v["target_entrypoint"], v["task_ids"]) == v["aggregation_id"]


def test_replicate_seeds_and_runner_seeds(golden):
    example = contracts.simjob_from_json(golden["simjob_spec_example"])
    by_param = {}
    for task, seed in zip(example.tasks, runner_seeds(example.tasks)):
        by_param.setdefault(task.param_id, ([], []))
        by_param[task.param_id][0].append(task.seed)
        by_param[task.param_id][1].append(seed)
    for v in golden["replicate_seeds"]:
        task_seeds, seeds = by_param[v["param_id"]]
        assert task_seeds == v["task_seeds"]
        assert seeds == v["runner_seeds"]
    first = golden["replicate_seeds"][0]
    assert [contracts.replicate_seed(first["param_id"], i) for i in range(3)] == first["task_seeds"]


def test_simjob_round_trip_is_byte_identical(golden):
    doc = golden["simjob_spec_example"]
    job = contracts.simjob_from_json(doc)
    assert json.dumps(job.to_json()) == json.dumps(doc)


def test_study_expands_to_the_simjob_modelops_builds(golden):
    study = golden["study_spec_example"]
    example = golden["simjob_spec_example"]
    job = contracts.study_to_simjob(study, example["bundle_ref"], job_id=example["job_id"])
    assert job.to_json() == example


def test_golden_paths_for_token_and_bundle_layouts(golden):
    token, bundle = Layout.parse("token"), Layout.parse("bundle")
    for v in golden["paths"]:
        assert token.sim_path(v["bundle_ref"], v["param_id"], v["seed"]) == v["token_layout"]
        assert bundle.sim_path(v["bundle_ref"], v["param_id"], v["seed"]) == v["bundle_layout"]
    for v in golden["aggregations"]:
        assert token.agg_path(v["bundle_ref"], v["target_entrypoint"], v["aggregation_id"]) == v["token_layout"]


def test_paths_rendered_once_per_param_set_equal_the_golden_and_whole_renders(golden):
    """Registration renders a param set's paths with a seed function (layout.sim_path_for_param); it must
    give the golden paths, and the same paths as a whole render for templates with text after the seed,
    a seed in the middle, and a seed twice."""
    for name, key in (("token", "token_layout"), ("bundle", "bundle_layout")):
        layout = Layout.parse(name)
        for v in golden["paths"]:
            assert layout.sim_path_for_param(v["bundle_ref"], v["param_id"])(v["seed"]) == v[key]
    pid, bundle = golden["paths"][0]["param_id"], golden["paths"][0]["bundle_ref"]
    for template in ("r/{param_id[:8]}/s{seed}/out", "r/{seed}/{param_id}", "r/{param_id}/{seed}/{shard(seed,1,2)}",
                     "r/{bundle_digest[:4]}/{param_id[:6]}_{seed}"):
        layout = Layout.parse(template)
        render = layout.sim_path_for_param(bundle, pid)
        for seed in (0, 7, 2**64 - 1):
            assert render(seed) == layout.sim_path(bundle, pid, seed), (template, seed)


def test_registry_port_quirk_reproduces_the_worker_segment(golden):
    quirk = golden["worker_digest_segment_quirk"]
    assert bundle_digest(quirk["bundle_ref"])[:12] == quirk["worker_segment"]
    path = Layout.parse("token").sim_path(quirk["bundle_ref"], "0" * 64, 7)
    assert path.startswith(f"token/v1/sims/{quirk['worker_segment']}/")


def test_custom_layout_dsl():
    layout = Layout.parse("runs/{bundle_digest[:6]}/{hash(param_id)[:4]}/{shard(seed,1,3)}/p{param_id[:4]}_s{seed}")
    pid = "4dcc7ab13573314d32533202b02f34a316bfb06c4155cb84f7cad4908a22f85e"
    path = layout.sim_path("sha256:" + "cd" * 32, pid, 9)
    import hashlib
    h = hashlib.blake2b(pid.encode(), digest_size=32).hexdigest()
    s = hashlib.blake2b(b"9", digest_size=32).hexdigest()
    assert path == f"runs/cdcdcd/{h[:4]}/{s[:3]}/p4dcc_s9"
    assert layout.static_prefix("sha256:" + "cd" * 32) == "runs/cdcdcd/"
    for bad in ("runs/{nope}/{param_id}/{seed}", "runs/{param_id", "x/{shard(param_id,2)}/{seed}", "plain", "a/{seed}"):
        with pytest.raises(LayoutError):
            Layout.parse(bad)


def test_expected_outputs_of_the_sample_job_are_its_twelve_paths(spec_dir):
    doc = json.loads((spec_dir / "sample" / "job-5a11e0c3.json").read_text())
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    job = contracts.simjob_from_json(doc)
    rows = list(expected_outputs(job, Layout.parse("token"), "runner"))
    expected = set(truth["verified"] + truth["missing"] + truth["errored"] + truth["incomplete"])
    assert len(rows) == 12 and {r.path for r in rows} == expected
    assert sum(t.seed == r.run_seed for t, r in zip(job.tasks, rows)) == truth["task_seeds_matching_runner_seeds"]
    assert truth["unexpected"][0] not in {r.path for r in rows}
    task_policy = {r.path for r in expected_outputs(job, Layout.parse("token"), "task")}
    assert task_policy != expected and len(task_policy) == 12


def test_aggregation_outputs_follow_target_entrypoints(golden):
    """One aggregation row per (param set, target): its path is the target directory (the runner names
    the aggregation after the task ids its replicates return), its task_id the id the declared outputs
    predict."""
    doc = dict(golden["simjob_spec_example"])
    targets = [v["target_entrypoint"] for v in golden["aggregations"]]
    doc["target_spec"] = {"data": {"target_entrypoints": targets}, "loss_function": None, "weights": None, "metadata": {}}
    job = contracts.simjob_from_json(doc)
    aggs = [r for r in expected_outputs(job, Layout.parse("token")) if r.kind == "aggregation"]
    assert len(aggs) == 2 * 2  # two param sets x two targets
    golden_rows = {(v["token_layout"].rpartition("/")[0], v["aggregation_id"])
                   for v in golden["aggregations"]}
    assert golden_rows <= {(r.path, r.task_id) for r in aggs}
    undeclared = json.loads(json.dumps(doc))
    for task in undeclared["tasks"]:
        task["outputs"] = None
    job = contracts.simjob_from_json(undeclared)
    rows = [r for r in expected_outputs(job, Layout.parse("token")) if r.kind == "aggregation"]
    assert [(r.path, r.task_id) for r in rows] == [(r.path, "") for r in aggs]  # expected, id unknown


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["tasks"][1]["params"].__setitem__("param_id", "0" * 64), "tasks[1].params.param_id"),
    (lambda d: d.__setitem__("bundle_ref", "latest"), "bundle_ref"),
    (lambda d: d["tasks"][0].__setitem__("bundle_ref", "repo@sha256:abc"), "tasks[0].bundle_ref"),
    (lambda d: d["tasks"][2].__setitem__("entrypoint", "models.seir.SEIR/Bad Scenario"), "tasks[2].entrypoint"),
    (lambda d: d["tasks"][0].__setitem__("seed", -1), "tasks[0].seed"),
    (lambda d: d["tasks"][0].__setitem__("seed", 2**64), "tasks[0].seed"),
    (lambda d: d["tasks"][0].__setitem__("seed", "7"), "tasks[0].seed"),
    (lambda d: d["tasks"][3]["params"]["values"].__setitem__("beta", [1, 2]), "tasks[3].params.values.beta"),
    (lambda d: d.__setitem__("tasks", []), "tasks"),
    (lambda d: d.__setitem__("job_id", "not-a-job"), "job_id"),
])
def test_contract_rules_name_the_problem(golden, mutate, message):
    doc = json.loads(json.dumps(golden["simjob_spec_example"]))
    mutate(doc)
    with pytest.raises(ContractError) as info:
        contracts.simjob_from_json(doc)
    assert message in str(info.value)


def test_non_finite_params_are_refused():
    with pytest.raises(ContractError, match="non-finite"):
        contracts.UniqueParameterSet.from_params({"x": float("nan")})
    with pytest.raises(ContractError):
        contracts.canonical_json({"x": float("inf")})


def test_entrypoint_grammar_is_modelops_dotted_import_path_rule():
    for good in ("models.seir.SEIR/baseline", "pkg.mod:func", "models.sir/b-c_d.e1", "targets.prev/loss",
                 "targets.incidence:IncidenceTarget", "_a.b1/x"):
        assert contracts.check_entrypoint(good) == good
    # ModelOps refuses an import path without a dot ("Invalid import_path format"), and objects with one.
    for bad in ("sir/baseline", "sir:simulate", "models/Baseline", "a:b/c", "", "x/-bad", "9mod.x/y",
                "models.sir/", "m.n:Obj.attr", "models./x", "models.sir/Baseline", None, "a.b//c"):
        with pytest.raises(ContractError):
            contracts.check_entrypoint(bad)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["tasks"][1].__setitem__("entrypoint", "sir/baseline"),
     "tasks[1].entrypoint: 'sir/baseline': import path 'sir' is not a dotted module path"),
    (lambda d: d.__setitem__("target_spec", {"data": {"target_entrypoints": ["targets.prev/loss", "prev"]}}),
     "target_spec.data.target_entrypoints[1]: 'prev' is not 'import.path/scenario' or 'module.path:object'"),
    (lambda d: d.__setitem__("target_spec", {"data": {"target_entrypoints": ["prev/loss"]}}),
     "target_spec.data.target_entrypoints[0]: 'prev/loss': import path 'prev' is not a dotted module path"),
])
def test_simjob_entrypoints_and_targets_break_the_rule_with_one_line_naming_them(golden, mutate, message):
    doc = json.loads(json.dumps(golden["simjob_spec_example"]))
    mutate(doc)
    with pytest.raises(ContractError) as info:
        contracts.simjob_from_json(doc)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_study_model_and_targets_must_be_dotted_import_paths(golden):
    study = golden["study_spec_example"]
    bundle = golden["simjob_spec_example"]["bundle_ref"]
    with pytest.raises(ContractError, match=r"^model: 'sir' is not a dotted import path"):
        contracts.study_to_simjob({**study, "model": "sir"}, bundle)
    with pytest.raises(ContractError, match=r"^targets\[0\]: 'prev' is not"):
        contracts.study_to_simjob({**study, "targets": ["prev"]}, bundle)


def test_study_with_targets_gets_modelops_to_simjob_target_spec(spec_dir):
    """SimulationStudy.to_simjob (contracts 0.3.1) writes this target_spec, key for key, in this order."""
    study = json.loads((spec_dir / "upstream" / "worker-job-c400000a" / "study.json").read_text())
    bundle = "sha256:427500fa4203d074404552c2f5f2e4d4f32e30dce8fad4c90cd1f05d0e775cd8"
    job = contracts.study_to_simjob(study, bundle, job_id="job-c400000a")
    spec = job.to_json()
    assert list(spec) == ["job_type", "job_id", "bundle_ref", "priority", "metadata", "target_spec", "tasks"]
    assert spec["target_spec"] == {
        "data": {"target_entrypoints": ["targets.prev/loss"], "target_ids": None, "target_set": None},
        "loss_function": "default", "weights": None,
        "metadata": {"targets": ["targets.prev/loss"], "target_ids": None, "target_set": None}}
    assert list(spec["target_spec"]) == ["data", "loss_function", "weights", "metadata"]
    # The study's tasks are the ones the real runner ran (job-c400000a.json), whatever its target_spec.
    ran = json.loads((spec_dir / "upstream" / "worker-job-c400000a" / "job-c400000a.json").read_text())
    assert spec["tasks"] == ran["tasks"] and spec["metadata"] == ran["metadata"]
    tagged = {**study, "metadata": {"target_ids": ["t1"], "target_set": "v2"}}
    with_ids = contracts.study_to_simjob(tagged, bundle)
    assert with_ids.target_spec["data"] == {"target_entrypoints": ["targets.prev/loss"], "target_ids": ["t1"],
                                            "target_set": "v2"}
    assert with_ids.target_spec["metadata"] == {"targets": ["targets.prev/loss"], "target_ids": ["t1"],
                                                "target_set": "v2"}
    assert contracts.study_to_simjob({**study, "targets": []}, bundle).target_spec is None


def test_duck_typed_contracts_objects_are_accepted(golden):
    from types import SimpleNamespace as NS
    doc = golden["simjob_spec_example"]
    tasks = [NS(bundle_ref=t["bundle_ref"], entrypoint=t["entrypoint"], seed=t["seed"], outputs=t["outputs"],
                params=NS(param_id=t["params"]["param_id"], params=t["params"]["values"])) for t in doc["tasks"]]
    obj = NS(job_type="simulation", job_id=doc["job_id"], bundle_ref=doc["bundle_ref"], tasks=tasks,
             priority=0, metadata=doc["metadata"], target_spec=None)
    assert contracts.from_contracts_object(obj).to_json() == doc
    tasks[0].params.param_id = "f" * 64
    with pytest.raises(ContractError, match=r"tasks\[0\]"):
        contracts.from_contracts_object(obj)


def test_task_ids_in_the_sample_results_are_reproduced(spec_dir):
    """Every result.json the real worker wrote carries the SimReturn task id we compute."""
    truth = json.loads((spec_dir / "sample" / "truth.json").read_text())
    found = 0
    for result in (spec_dir / "sample" / "provenance").rglob("result.json"):
        if str(result.parent).endswith(tuple(truth["unexpected"])):
            continue  # a stray directory planted in the sample, not a worker's result
        meta = json.loads((result.parent / "metadata.json").read_text())
        doc = json.loads(result.read_text())
        errored = "error" in doc
        expected = contracts.sim_return_task_id(meta["param_id"], meta["seed"], meta["outputs"] or [], error=errored)
        assert doc["task_id"] == expected, result
        found += 1
    assert found == len(truth["verified"]) + len(truth["errored"])
