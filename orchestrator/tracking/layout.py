"""Names of the MLflow layout (DESIGN.md "MLflow layout"): one place for writer and reader.

experiment = tracking.experiment or the study name
  study run   "<study>/<run>"            tags ensemble.role=study, ensemble.study, ensemble.run
                                         params: the resolved spec (dotted keys)
                                         artifacts: study.yaml, trials.json, members.json
    member run "<study>/<trial key>"     nested (mlflow.parentRunId = study run)
                                         tags ensemble.role=member, ensemble.member, ensemble.seed,
                                         ensemble.trial_id (= trial key), ensemble.data_fingerprint
                                         params: searched values, seed, member
                                         metrics per epoch (step = epoch)
                                         artifacts: member.json, spec.json, labels_{val,test}.npy,
                                         snapshots/<k>/{model.pt,logits_val.npy,logits_test.npy,
                                         metrics.json}, polyak/ (same files), summary.json
                                         LoggedModels "snapshot-<k>" and "polyak-model" (step
                                         = epoch)
"""

from __future__ import annotations

# Tags ---------------------------------------------------------------------------------------
ROLE = "ensemble.role"
STUDY = "ensemble.study"
RUN = "ensemble.run"
MEMBER = "ensemble.member"
SEED = "ensemble.seed"
TRIAL_ID = "ensemble.trial_id"  # the trial key (m000-bf21a9e8): how a resumed member finds its run
TRIAL_KEY = "ensemble.trial_key"  # same value; the name the cluster code uses for it
DATA_FINGERPRINT = "ensemble.data_fingerprint"
RAY_STORAGE = "ensemble.ray_storage"
OUTPUT = "ensemble.output"
TRIALS = "ensemble.trials"
SNAPSHOT_KIND = "ensemble.snapshot_kind"
SNAPSHOT_INDEX = "ensemble.snapshot_index"
SNAPSHOT_EPOCH = "ensemble.snapshot_epoch"
PARENT_RUN_ID = "mlflow.parentRunId"  # what mlflow.start_run(parent_run_id=...) sets
RUN_NOTE = "mlflow.note.content"  # the run description shown in the UI

ROLE_STUDY = "study"
ROLE_MEMBER = "member"
ROLE_ENSEMBLE = "ensemble"

# Artifacts ----------------------------------------------------------------------------------
STUDY_YAML = "study.yaml"
TRIALS_JSON = "trials.json"
MEMBERS_JSON = "members.json"
MEMBER_JSON = "member.json"
SPEC_JSON = "spec.json"
SUMMARY_JSON = "summary.json"
SNAPSHOTS_DIR = "snapshots"  # same names as training/sink.py's snapshot layout
POLYAK_DIR = "polyak"
SNAPSHOT_METRICS = "metrics.json"
SNAPSHOT_WEIGHTS = "model.pt"


def labels_file(split: str) -> str:
    return f"labels_{split}.npy"


def logits_file(split: str) -> str:
    return f"logits_{split}.npy"


def study_run_name(study: str, run: str) -> str:
    return f"{study}/{run}"


def member_run_name(study: str, trial_key: str) -> str:
    return f"{study}/{trial_key}"


def logged_model_name(kind: str, index: int) -> str:
    # Never the name of an artifact folder: MLflow 3 resolves runs:/<run>/<name> and
    # list_artifacts(run, <name>) to a LoggedModel of that name first, which would hide
    # polyak/ behind the model's files.
    return "polyak-model" if kind == "polyak" else f"snapshot-{index}"


def tags_filter(pairs: dict[str, str]) -> str:
    """An MLflow search filter matching every tag in `pairs` (dotted keys need backticks).

    Values are names from a safe alphabet (study names, trial keys, run ids): no quoting needed.
    """
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in pairs.items())
