"""infra/ray: the AWS launcher config, the KubeRay manifests, the image and the IAM policies.

All offline: Ray's own cluster-config validator (the schema `ray up` applies, after the same
default-filling), YAML/JSON parsing, and cross-checks against the code that runs on the cluster
(`ensemble submit`'s entrypoint and upload excludes, the study spec validator, the member planner).
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from orchestrator import config
from orchestrator.cluster.resources import ClusterShape, ResourceError, plan_members
from orchestrator.cluster.submit import ENTRYPOINT, STUDY_ENV, UPLOAD_EXCLUDES, job_entrypoint

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "ray"
AWS_CONFIG = INFRA / "aws-cluster.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
DOCKERFILE = INFRA / "Dockerfile"
S3_POLICY = INFRA / "iam-policy.json"
HEAD_POLICY = INFRA / "iam-head-policy.json"
GPU_STUDY = ROOT / "jobs" / "studies" / "cifar10_resnet110_snapshot_gpu.yaml"
PLACEHOLDER = "REPLACE_ME"
S3_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def _pinned_ray() -> str:
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )
    return pins["ray"].strip()


RAY_PIN = _pinned_ray()
IMAGE_TAG = f"{RAY_PIN}-py311-gpu"  # Ray's image naming: <version>-py<XY>-<variant>


def _docs(path: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{path.name}: one document per kind expected"
    return by_kind


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load(AWS_CONFIG.read_text())


@pytest.fixture(scope="module")
def raycluster() -> dict[str, dict]:
    return _docs(RAYCLUSTER)


@pytest.fixture(scope="module")
def rayjob() -> dict[str, dict]:
    return _docs(RAYJOB)


@pytest.fixture(scope="module")
def runtime_env(rayjob) -> dict:
    return yaml.safe_load(rayjob["RayJob"]["spec"]["runtimeEnvYAML"])


@pytest.fixture(scope="module")
def s3_policy() -> dict:
    return json.loads(S3_POLICY.read_text())


def _gpu_group(cluster_spec: dict) -> dict:
    (group,) = [g for g in cluster_spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    return group


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


# --- Ray's cluster launcher config -----------------------------------------------------------


def _ray_validate(cfg: dict) -> None:
    """What `ray up` does to a config before any AWS call: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_aws_config_passes_rays_schema_as_written(aws):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(aws, schema)


def test_aws_config_passes_rays_validator_after_default_filling(aws):
    _ray_validate(aws)


def _unknown_key(cfg):
    cfg["head_nodes"] = {}


def _fractional_gpu(cfg):
    cfg["available_node_types"]["gpu"]["resources"]["GPU"] = 0.5


def _missing_head_type(cfg):
    cfg["head_node_type"] = "no-such-type"


def _min_above_max(cfg):
    cfg["available_node_types"]["gpu"]["min_workers"] = cfg["max_workers"] + 1


@pytest.mark.parametrize(
    "breakage", [_unknown_key, _fractional_gpu, _missing_head_type, _min_above_max]
)
def test_rays_validator_rejects_a_broken_copy(aws, breakage):
    broken = copy.deepcopy(aws)
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _ray_validate(broken)


def test_aws_head_runs_no_members_and_gpu_workers_scale_from_zero(aws):
    types = aws["available_node_types"]
    head, gpu = types[aws["head_node_type"]], types["gpu"]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    start = " ".join(aws["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--num-gpus=0" in start
    assert gpu["min_workers"] == 0 and 1 <= gpu["max_workers"] <= aws["max_workers"]
    assert gpu["resources"]["GPU"] >= 1
    assert aws["idle_timeout_minutes"] > 0
    assert aws["provider"]["type"] == "aws" and "cache_stopped_nodes" in aws["provider"]


def test_aws_dashboard_listens_on_loopback_only(aws):
    start = " ".join(aws["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def test_aws_nodes_install_this_package_with_its_constraints(aws):
    remote = next(r for r, local in aws["file_mounts"].items() if local == ".")
    assert any(
        f"-c {remote}/constraints.txt" in c and f"-e {remote}" in c for c in aws["setup_commands"]
    )
    # Same upload hygiene as `ensemble submit`: no virtualenvs, outputs or VCS data.
    assert set(UPLOAD_EXCLUDES) <= set(aws["rsync_exclude"])


def test_aws_nodes_get_s3_roles_token_auth_and_the_tracking_server(aws):
    for node_type in aws["available_node_types"].values():
        arn = node_type["node_config"]["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(r"arn:aws:iam::\w+:instance-profile/[\w+=,.@-]+", arn), arn
    env = dict(
        opt.removeprefix("--env=").split("=", 1)
        for opt in aws["docker"]["run_options"]
        if opt.startswith("--env=")
    )
    assert env["RAY_AUTH_MODE"] == "token"
    token_dir = env["RAY_AUTH_TOKEN_PATH"].rsplit("/", 1)[0]
    assert any(token_dir.endswith(r.removeprefix("~")) for r in aws["file_mounts"])
    assert env["MLFLOW_TRACKING_URI"].startswith("http")


# --- images and Ray versions -----------------------------------------------------------------


def _k8s_images(doc: dict) -> list[str]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c["image"] for g in groups for c in g["template"]["spec"]["containers"]]


def test_ray_versions_agree_with_the_installed_ray_and_the_pin(aws, raycluster, rayjob):
    installed = ray.__version__.split(".")[:2]
    assert RAY_PIN.split(".")[:2] == installed
    assert aws["docker"]["image"] == f"rayproject/ray:{IMAGE_TAG}"
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert base == f"rayproject/ray:{IMAGE_TAG}"
    for doc in (raycluster["RayCluster"], rayjob["RayJob"]):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert spec["rayVersion"] == RAY_PIN
        images = _k8s_images(doc)
        assert images and all(image.endswith(f":{IMAGE_TAG}") for image in images), images
        assert len(set(images)) == 1, "head and workers must run the same image"


def test_the_image_installs_this_package_where_the_rayjob_runs_it(runtime_env):
    text = DOCKERFILE.read_text()
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", text, flags=re.M)
    assert runtime_env["working_dir"] == workdir
    assert re.search(r"^RUN pip install .*-c constraints\.txt -e \.\s*$", text, flags=re.M)
    for path in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, flags=re.M):
        for part in path.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which does not exist"


# --- KubeRay manifests -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_manifests_carry_what_kuberay_needs(path):
    docs = _docs(path)
    main = docs["RayJob"] if "RayJob" in docs else docs["RayCluster"]
    assert main["apiVersion"] == "ray.io/v1" and main["metadata"]["name"]
    spec = main["spec"].get("rayClusterSpec", main["spec"])
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    for group in [head, *spec["workerGroupSpecs"]]:
        # KubeRay's CRD types rayStartParams as map[string]string: a bare 0 is rejected.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group
        assert group["template"]["spec"]["containers"][0]["name"].startswith("ray-")
    gpu = _gpu_group(spec)
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    resources = _ray_container(gpu)["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_manifests_run_as_the_irsa_service_account(raycluster, rayjob):
    for docs in (raycluster, rayjob):
        sa = docs["ServiceAccount"]
        role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\w+:role/[\w+=,.@-]+", role), role
        main = docs.get("RayJob") or docs["RayCluster"]
        spec = main["spec"].get("rayClusterSpec", main["spec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            assert group["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert raycluster["ServiceAccount"] == rayjob["ServiceAccount"]


def test_raycluster_scales_gpus_from_zero(raycluster):
    gpu = _gpu_group(raycluster["RayCluster"]["spec"])
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1


def test_rayjob_cluster_is_the_raycluster_but_starts_with_gpus(raycluster, rayjob):
    standalone = copy.deepcopy(raycluster["RayCluster"]["spec"])
    in_job = copy.deepcopy(rayjob["RayJob"]["spec"]["rayClusterSpec"])
    job_gpu = _gpu_group(in_job)
    # A study is planned against the GPUs alive when it starts, and KubeRay submits once all
    # pods are ready: the job's cluster starts with its GPU pods instead of scaling from zero.
    assert job_gpu["minReplicas"] >= 1 and job_gpu["replicas"] == job_gpu["minReplicas"]
    for group in (_gpu_group(standalone), job_gpu):
        del group["replicas"], group["minReplicas"]
    assert in_job == standalone


def test_rayjob_starts_the_entrypoint_of_ensemble_submit(rayjob, runtime_env):
    spec = rayjob["RayJob"]["spec"]
    assert spec["entrypoint"] == job_entrypoint(None)
    assert shlex.split(spec["entrypoint"])[:2] == ["python", ENTRYPOINT]
    assert runtime_env["excludes"] == UPLOAD_EXCLUDES
    assert spec["shutdownAfterJobFinishes"] is True


def test_rayjob_study_is_valid_and_uses_s3_storage_and_the_tracking_server(runtime_env, s3_policy):
    spec = config.from_dict(yaml.safe_load(runtime_env["env_vars"][STUDY_ENV]), source="rayjob")
    assert spec.name == config.load(GPU_STUDY).name
    assert spec.tracking.uri and spec.tracking.uri.startswith(("http://", "https://"))
    assert spec.storage.path and spec.storage.path.startswith("s3://")
    bucket, prefix = _policy_bucket_prefix(s3_policy)
    assert spec.storage.path.rstrip("/") == f"s3://{bucket}/{prefix}"


def _worker_shape(cpus: float, gpus: float) -> ClusterShape:
    return ClusterShape(total_cpus=cpus, total_gpus=gpus, max_node_cpus=cpus, max_node_gpus=gpus)


def test_shipped_gpu_study_fits_one_gpu_worker_of_each_flavour(aws, rayjob, runtime_env):
    spec = config.load(GPU_STUDY)
    trials = len(spec.seeds())
    aws_gpu = aws["available_node_types"]["gpu"]["resources"]
    pod = _ray_container(_gpu_group(rayjob["RayJob"]["spec"]["rayClusterSpec"]))["resources"]
    shapes = [
        _worker_shape(aws_gpu["CPU"], aws_gpu["GPU"]),
        _worker_shape(float(pod["limits"]["cpu"]), float(pod["limits"]["nvidia.com/gpu"])),
    ]
    for shape in shapes:
        plan_members(spec.resources, shape, trials)  # raises ResourceError if it does not fit
    # ... and the study the RayJob carries fits the GPUs the job starts with.
    job_study = config.from_dict(yaml.safe_load(runtime_env["env_vars"][STUDY_ENV]))
    pods = _gpu_group(rayjob["RayJob"]["spec"]["rayClusterSpec"])["minReplicas"]
    pod_shape = shapes[1]
    job_cluster = ClusterShape(
        total_cpus=pod_shape.total_cpus * pods,
        total_gpus=pod_shape.total_gpus * pods,
        max_node_cpus=pod_shape.max_node_cpus,
        max_node_gpus=pod_shape.max_node_gpus,
    )
    plan_members(job_study.resources, job_cluster, len(job_study.seeds()))


def test_planner_rejects_a_member_larger_than_a_gpu_worker(aws):
    spec = config.load(GPU_STUDY, ["resources.cpus_per_worker=64"])
    gpu = aws["available_node_types"]["gpu"]["resources"]
    with pytest.raises(ResourceError):
        plan_members(spec.resources, _worker_shape(gpu["CPU"], gpu["GPU"]), 1)


# --- IAM --------------------------------------------------------------------------------------


def _statements(policy: dict) -> list[dict]:
    return [
        {**s, "Action": _as_list(s["Action"]), "Resource": _as_list(s["Resource"])}
        for s in policy["Statement"]
    ]


def _as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def _policy_bucket_prefix(policy: dict) -> tuple[str, str]:
    (listing,) = [s for s in _statements(policy) if "s3:ListBucket" in s["Action"]]
    (bucket_arn,) = listing["Resource"]
    objects = {
        r for s in _statements(policy) if S3_ACTIONS & set(s["Action"]) for r in s["Resource"]
    }
    (object_arn,) = objects
    bucket = bucket_arn.removeprefix("arn:aws:s3:::")
    prefix = object_arn.removeprefix(f"arn:aws:s3:::{bucket}/").removesuffix("/*")
    return bucket, prefix


def test_s3_policy_grants_only_ray_storage_actions_on_its_prefix(s3_policy):
    assert s3_policy["Version"] == "2012-10-17"
    statements = _statements(s3_policy)
    assert all(s["Effect"] == "Allow" for s in statements)
    actions = {a for s in statements for a in s["Action"]}
    assert actions == S3_ACTIONS | {"s3:ListBucket"}
    bucket, prefix = _policy_bucket_prefix(s3_policy)
    assert prefix and "*" not in prefix and "*" not in bucket
    for s in statements:
        if "s3:ListBucket" in s["Action"]:
            assert s["Action"] == ["s3:ListBucket"] and s["Resource"] == [f"arn:aws:s3:::{bucket}"]
            (condition,) = s["Condition"].values()
            assert set(condition["s3:prefix"]) == {prefix, f"{prefix}/*"}
        else:
            assert s["Resource"] == [f"arn:aws:s3:::{bucket}/{prefix}/*"]


def test_s3_policy_covers_the_directory_markers_pyarrow_writes(s3_policy):
    """pyarrow's create_dir (used by Ray's checkpoint upload) PUTs `a/`, `a/b/`, ... for every
    parent of the path: each of those keys must be writable, or every upload fails."""
    bucket, prefix = _policy_bucket_prefix(s3_policy)
    writable = [
        r.removeprefix(f"arn:aws:s3:::{bucket}/")
        for s in _statements(s3_policy)
        if "s3:PutObject" in s["Action"]
        for r in s["Resource"]
    ]
    key = f"{prefix}/cifar10-resnet110-snapshot/run-000/members/trial_0/checkpoint_000"
    parts = key.split("/")
    markers = ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
    for marker in markers:
        assert any(fnmatch.fnmatchcase(marker, pattern) for pattern in writable), marker


def test_head_policy_launches_and_ends_only_this_clusters_workers(aws):
    policy = json.loads(HEAD_POLICY.read_text())
    statements = _statements(policy)
    actions = {a for s in statements for a in s["Action"]}
    assert all(a.startswith(("ec2:", "iam:PassRole")) for a in actions), actions
    assert not any(a.endswith("*") for a in actions)
    for s in statements:
        if {"ec2:TerminateInstances", "ec2:StopInstances"} & set(s["Action"]):
            tags = s["Condition"]["StringEquals"]
            assert tags == {"ec2:ResourceTag/ray-cluster-name": aws["cluster_name"]}
    # The head may pass the worker role only (profile and role share a name, infra/README.md).
    (passrole,) = [s for s in statements if "iam:PassRole" in s["Action"]]
    worker_profile = aws["available_node_types"]["gpu"]["node_config"]["IamInstanceProfile"]["Arn"]
    assert passrole["Resource"] == [worker_profile.replace(":instance-profile/", ":role/")]


# --- placeholders, helper script, README --------------------------------------------------------


@pytest.mark.parametrize(
    "path", [AWS_CONFIG, RAYCLUSTER, RAYJOB, S3_POLICY, HEAD_POLICY], ids=lambda p: p.name
)
def test_account_specific_values_are_obvious_placeholders(path):
    text = path.read_text()
    assert PLACEHOLDER in text
    assert not re.search(r"\b\d{12}\b", text), "a real AWS account id slipped in"
    assert not re.search(r"\bami-[0-9a-f]{8,}\b", text), "a real AMI id slipped in"


def _request_gpus():
    spec = importlib.util.spec_from_file_location("request_gpus", INFRA / "request_gpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_request_gpus_asks_for_single_gpu_bundles_and_rejects_negatives():
    module = _request_gpus()
    assert module.gpu_bundles(3) == [{"GPU": 1}] * 3
    assert module.gpu_bundles(0) == []
    assert module.parse_args(["2", "--timeout", "5"]).gpus == 2
    with pytest.raises(SystemExit):
        module.parse_args(["-1"])


def test_readme_points_at_files_that_exist():
    readme = (ROOT / "infra" / "README.md").read_text()
    mentioned = set(re.findall(r"infra/ray/[\w./-]+\w", readme))
    mentioned |= {f"infra/{p}" for p in re.findall(r"\]\((ray/[\w./-]+)\)", readme)}
    assert {"infra/ray/aws-cluster.yaml", "infra/ray/kuberay/rayjob.yaml"} <= mentioned
    missing = sorted(p for p in mentioned if not (ROOT / p).exists())
    assert not missing, f"infra/README.md mentions missing files: {missing}"
