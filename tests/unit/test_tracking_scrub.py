"""No credential ever reaches MLflow params, tags or logged configs."""

import json

import torch
import yaml
from mlflow import MlflowClient

from orchestrator import config
from orchestrator.cluster.launch import StudyPaths
from orchestrator.cluster.trials import expand_trials
from orchestrator.tracking.member_sink import MlflowMemberSink
from orchestrator.tracking.scrub import REDACTED, scrub, scrub_text
from orchestrator.tracking.study import start_study
from orchestrator.training.member import train_member
from tests.conftest import synthetic_tree

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def test_secret_keys_are_redacted_at_any_depth():
    tree = {
        "aws_secret_access_key": SECRET,
        "nested": {"Password": "pw", "api_key": "k", "token": "t", "key_id": "i", "depth": 20},
        "list": [{"access_key": "a"}],
        "author": "Ada",  # not a secret
        "empty_token": None,  # nothing to hide
    }
    out = scrub(tree)
    assert out["aws_secret_access_key"] == REDACTED
    assert out["nested"] == {
        "Password": REDACTED,
        "api_key": REDACTED,
        "token": REDACTED,
        "key_id": REDACTED,
        "depth": 20,
    }
    assert out["list"] == [{"access_key": REDACTED}]
    assert out["author"] == "Ada" and out["empty_token"] is None
    assert tree["nested"]["Password"] == "pw"  # the input is not modified


def test_secrets_inside_uris_and_text_are_redacted():
    cases = {
        f"s3://{KEY_ID}:{SECRET}@bucket/prefix": "s3://***@bucket/prefix",
        "http://alice:hunter2@host:5000/x": "http://***@host:5000/x",
        f"s3://b/p?endpoint_override=127.0.0.1:9000&access_key={KEY_ID}&secret_key={SECRET}":
            "s3://b/p?endpoint_override=127.0.0.1:9000&access_key=***&secret_key=***",
        "https://b.s3.amazonaws.com/o?X-Amz-Credential=abc&X-Amz-Signature=def&x=1":
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
        f"failed to read data with key {KEY_ID} from s3": "failed to read data with key *** from s3",
    }  # fmt: skip
    for text, expected in cases.items():
        assert scrub_text(text) == expected
    plain = "s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http"
    assert scrub_text(plain) == plain  # nothing secret: left exactly as it was


def test_study_run_params_tags_and_configs_hold_no_secret(study_dir):
    tree = synthetic_tree(
        description=f"reads s3://{KEY_ID}:{SECRET}@bucket",
        data={"dir": f"s3://data/fm?access_key={KEY_ID}&secret_key={SECRET}"},
        storage={"path": f"s3://{KEY_ID}:{SECRET}@ray-bucket/studies?scheme=http"},
    )
    spec = config.from_dict(tree)
    run_storage = f"{spec.storage.path}/run-001"
    paths = StudyPaths(study_dir, "run-001", run_storage, f"{run_storage}/members", "tune-001")
    tracking = start_study(spec, paths, expand_trials(spec))

    client = MlflowClient(tracking["uri"])
    run = client.get_run(tracking["study_run_id"])
    logged = [
        json.dumps(run.data.params),
        json.dumps(run.data.tags),
        client.download_artifacts(run.info.run_id, "study.yaml", str(study_dir)),
        client.download_artifacts(run.info.run_id, "trials.json", str(study_dir)),
    ]
    logged[2:] = [open(path).read() for path in logged[2:]]
    for text in logged:
        assert SECRET not in text and KEY_ID not in text
    # ... while the rest of the spec is there to say what ran.
    assert run.data.params["model.name"] == "tiny"
    assert run.data.params["data.dir"] == "s3://data/fm?access_key=***&secret_key=***"
    assert run.data.tags["ensemble.ray_storage"].startswith("s3://***@ray-bucket/studies")
    assert yaml.safe_load(logged[2])["train"]["epochs"] == 4


def test_member_run_params_tags_and_files_hold_no_secret(study_dir):
    secret_dir = f"s3://{KEY_ID}:{SECRET}@bucket/data"
    tree = synthetic_tree(
        data={"dir": secret_dir},
        train={"epochs": 2},
        schedule={"cycles": 1},
        search={"space": {"data.dir": [secret_dir]}},  # a searched value is a param
        members={"count": 1},
    )
    spec = config.from_dict(tree)
    paths = StudyPaths(study_dir, "run-001", "r", "r/members", "tune-001")
    trials = expand_trials(spec)
    tracking = start_study(spec, paths, trials) | {"log_models": False}
    sink = MlflowMemberSink.from_config(tracking, trials[0].to_dict())
    train_member(config.with_values(spec, trials[0].values), sink, member=0)

    client = MlflowClient(tracking["uri"])
    run = client.get_run(sink.run_id)
    assert run.data.params["data.dir"] == "s3://***@bucket/data"
    texts = [json.dumps(run.data.params), json.dumps(run.data.tags)]
    for name in ("member.json", "spec.json", "summary.json", "snapshots/0/model.pt"):
        local = client.download_artifacts(run.info.run_id, name, str(study_dir / "dl"))
        if name.endswith(".pt"):
            texts.append(str(torch.load(local, weights_only=True)["spec"]))
        else:
            texts.append(open(local).read())
    for text in texts:
        assert SECRET not in text and KEY_ID not in text
