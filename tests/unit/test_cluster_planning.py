"""Study planning without a cluster: trials, resources, smoke mode, storage paths, addresses."""

import json
import socket

import pytest

from orchestrator import config
from orchestrator.cluster.launch import resolve_paths
from orchestrator.cluster.resources import ClusterShape, ResourceError, plan_members
from orchestrator.cluster.session import ClusterUnreachableError, _probe
from orchestrator.cluster.storage import join, list_dirs, read_text, write_text
from orchestrator.cluster.trials import expand_trials, search_configs
from orchestrator.config import ResourcesSpec, SpecError


def spec_with(**sections):
    return config.from_dict({"name": "plan", "train": {"epochs": 4}, **sections})


def test_grid_is_crossed_with_member_seeds():
    spec = spec_with(
        members={"seeds": [3, 5]},
        search={"space": {"model.depth": [20, 32], "schedule.cycles": [1, 2]}},
        schedule={"kind": "cyclic"},
    )
    trials = expand_trials(spec)
    assert len(trials) == 8
    assert {(t.values["model.depth"], t.values["schedule.cycles"], t.seed) for t in trials} == {
        (d, c, s) for d in (20, 32) for c in (1, 2) for s in (3, 5)
    }
    assert len({t.key for t in trials}) == 8
    assert expand_trials(spec) == trials  # deterministic keys: re-runs find the same members


def test_random_search_is_reproducible_and_samples_ranges():
    spec = spec_with(
        search={
            "algorithm": "random",
            "num_samples": 5,
            "space": {"train.lr": {"low": 0.01, "high": 1.0, "log": True}, "model.depth": [20, 56]},
        },
    )
    configs = search_configs(spec)
    assert configs == search_configs(spec)
    assert len(configs) == 5
    assert all(0.01 <= c["train.lr"] <= 1.0 and c["model.depth"] in (20, 56) for c in configs)


def test_an_invalid_combination_fails_before_training():
    spec = spec_with(search={"space": {"schedule.cycles": [3]}}, schedule={"kind": "cyclic"})
    with pytest.raises(SpecError, match="schedule.cycles=3"):
        expand_trials(spec)


def shape(cpus=2, gpus=0, nodes=1):
    return ClusterShape(cpus * nodes, gpus * nodes, cpus, gpus)


def test_members_run_concurrently_when_cores_allow():
    assert plan_members(ResourcesSpec(), shape(cpus=2), trials=4).max_concurrent == 2
    assert (
        plan_members(ResourcesSpec(cpus_per_worker=2), shape(cpus=2), trials=4).max_concurrent == 1
    )
    assert (
        plan_members(ResourcesSpec(max_concurrent_members=1), shape(8), trials=4).max_concurrent
        == 1
    )
    fractional = ResourcesSpec(gpus_per_worker=0.25)
    assert plan_members(fractional, shape(cpus=16, gpus=1), trials=8).max_concurrent == 4


def test_more_gpus_than_the_cluster_has_is_refused():
    with pytest.raises(ResourceError, match="gpus_per_worker=1"):
        plan_members(ResourcesSpec(gpus_per_worker=1), shape(cpus=2), trials=1)
    with pytest.raises(ResourceError, match="cpus_per_worker=4"):
        plan_members(ResourcesSpec(cpus_per_worker=4), shape(cpus=2), trials=1)
    with pytest.raises(ResourceError, match="workers_per_member=3"):
        plan_members(ResourcesSpec(workers_per_member=3), shape(cpus=2), trials=1)


def test_smoke_shrinks_any_study():
    spec = config.load(
        "jobs/studies/cifar10_resnet110_snapshot_gpu.yaml", ["search.space.model.depth=[56, 110]"]
    )
    small = config.smoke(spec)
    assert small.name.endswith("-smoke")
    assert small.data.subset == config.SMOKE_TRAIN_IMAGES
    assert small.train.epochs == 2 and small.schedule.cycles == 2  # 2 snapshots, 1 epoch each
    assert len(small.seeds()) == 2
    assert len(expand_trials(small)) == 2


def test_fresh_starts_a_new_run_and_keeps_the_old(tmp_path):
    spec = spec_with()
    first = resolve_paths(spec, tmp_path, fresh=False)
    again = resolve_paths(spec, tmp_path, fresh=False)
    fresh = resolve_paths(spec, tmp_path, fresh=True)
    assert first.run == again.run == "run-001" and fresh.run == "run-002"
    assert first.tune_name != again.tune_name  # each invocation has its own Tune state
    assert fresh.members_storage.endswith("run-002/members")
    assert json.loads((tmp_path / "study.json").read_text())["runs"] == ["run-001", "run-002"]


def test_s3_storage_keeps_the_endpoint_query(tmp_path):
    uri = "s3://bucket/pre?endpoint_override=127.0.0.1:9000&scheme=http"
    assert (
        join(uri, "run-001", "members")
        == "s3://bucket/pre/run-001/members?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    spec = spec_with(storage={"path": uri})
    assert "s3://bucket/pre/plan/run-001" in resolve_paths(spec, tmp_path, False).run_storage


def test_local_storage_roundtrip(tmp_path):
    target = join(str(tmp_path), "a", "b.json")
    assert read_text(target) is None
    write_text(target, "{}")
    assert read_text(target) == "{}"
    assert list_dirs(str(tmp_path)) == ["a"]


def test_an_address_that_does_not_answer_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnreachableError, match=f"127.0.0.1:{port}"):
        _probe(f"127.0.0.1:{port}")
    with pytest.raises(ClusterUnreachableError, match="ensemble submit"):
        _probe("http://127.0.0.1:8265")


def test_submit_retries_while_a_fresh_heads_job_agent_starts():
    from orchestrator.cluster.submit import retry_while_agent_starts

    answers = iter(["agent", "agent", "raysubmit_1"])
    said = []

    def submit():
        answer = next(answers)
        if answer == "agent":
            raise RuntimeError("Request failed with status code 500: No available agent to submit")
        return answer

    assert retry_while_agent_starts(submit, poll_s=0.0, echo=said.append) == "raysubmit_1"
    assert len(said) == 1 and "retrying" in said[0]


@pytest.mark.parametrize("message", ["status code 401: Unauthorized", "No available agent"])
def test_submit_gives_up_on_other_errors_and_after_the_wait(message):
    from orchestrator.cluster.submit import retry_while_agent_starts

    calls = []

    def submit():
        calls.append(1)
        raise RuntimeError(message)

    with pytest.raises(RuntimeError, match=message):
        retry_while_agent_starts(submit, wait_s=0.0, poll_s=0.0, echo=lambda _: None)
    assert len(calls) == 1
