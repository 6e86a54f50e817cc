"""The driver's side: the study's experiment and parent run, created once, before any member.

`start_study` is `run_study`'s tracking_factory: it checks and prepares the store
(uri.open_target), sets up the experiment and the study run, and returns the JSON-able dict
every trial receives as config["tracking"]. Workers only ever open runs by id from it: two
processes creating an experiment by name race, and one of them lands in "Default"
(REFERENCES.md), so no worker does that.

Re-running a study (same output dir, no --fresh) reuses its study run: the run name is
deterministic (`<study>/<run>`) and the run is found again by its tags.
`finish_study` closes the run with a table of members and their outcome.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from orchestrator.config import flatten
from orchestrator.tracking import layout
from orchestrator.tracking.retry import retry_call
from orchestrator.tracking.scrub import scrub, scrub_text
from orchestrator.tracking.uri import TrackingTarget, open_target

if TYPE_CHECKING:
    from orchestrator.cluster.launch import StudyOutcome, StudyPaths
    from orchestrator.cluster.trials import Trial
    from orchestrator.config import StudySpec

# MLflow's limits (mlflow.utils.validation): param values up to 6000 characters, keys up to 250,
# at most 100 params per log_batch call.
MAX_PARAM_VALUE = 6000
MAX_PARAM_KEY = 250
PARAMS_PER_BATCH = 100
TRUNCATED = "...[truncated; full value in study.yaml]"


def param_value(value: Any) -> str:
    """A param's text: scalars as str, lists/dicts as JSON, cut to MLflow's length limit."""
    if isinstance(value, str | bool | int | float) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - len(TRUNCATED)] + TRUNCATED
    return text


def spec_params(spec_dict: dict[str, Any]) -> dict[str, str]:
    """Flattened dotted keys of a (scrubbed) spec dict -> param text."""
    return {
        key: param_value(value)
        for key, value in flatten(spec_dict).items()
        if len(key) <= MAX_PARAM_KEY
    }


def log_params(client: MlflowClient, run_id: str, params: dict[str, str], what: str) -> None:
    """Log params MLflow does not have yet (a param cannot change value once logged)."""
    existing = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for start in range(0, len(new), PARAMS_PER_BATCH):
        batch = new[start : start + PARAMS_PER_BATCH]
        retry_call(lambda b=batch: client.log_batch(run_id, params=b), f"{what}: params")


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:
            # Another driver created it between our lookup and create: use theirs.
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def start_study(
    spec: StudySpec, paths: StudyPaths, trials: list[Trial], *, nodes: int = 1
) -> dict[str, Any]:
    """Prepare tracking for one study run; the returned dict goes to every trial."""
    target = open_target(spec.tracking, paths.output, nodes)
    return start_study_run(target, spec, paths, trials)


def start_study_run(
    target: TrackingTarget, spec: StudySpec, paths: StudyPaths, trials: list[Trial]
) -> dict[str, Any]:
    client = MlflowClient(target.uri)
    what = f"study {spec.name} ({paths.run})"
    experiment_id = retry_call(
        lambda: ensure_experiment(
            client, spec.tracking.experiment or spec.name, target.artifact_location
        ),
        f"{what}: experiment",
    )
    identity = {layout.ROLE: layout.ROLE_STUDY, layout.STUDY: spec.name, layout.RUN: paths.run}
    tags = {
        **identity,
        layout.RAY_STORAGE: scrub_text(paths.run_storage),
        layout.OUTPUT: str(paths.output),
        layout.TRIALS: str(len(trials)),
    }
    if spec.description:
        tags[layout.RUN_NOTE] = scrub_text(spec.description)

    def find_or_create() -> str:
        found = client.search_runs(
            [experiment_id],
            layout.tags_filter(identity),
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        run = client.create_run(
            experiment_id, run_name=layout.study_run_name(spec.name, paths.run), tags=tags
        )
        return run.info.run_id

    # Searching first makes a retried creation find the run a lost response had created.
    run_id = retry_call(find_or_create, f"{what}: study run")
    spec_dict = scrub(spec.to_dict())
    log_params(client, run_id, spec_params(spec_dict), what)
    retry_call(
        lambda: client.log_text(
            run_id, yaml.safe_dump(spec_dict, sort_keys=False), layout.STUDY_YAML
        ),
        f"{what}: {layout.STUDY_YAML}",
    )
    retry_call(
        lambda: client.log_text(
            run_id, json.dumps(scrub([t.to_dict() for t in trials]), indent=2), layout.TRIALS_JSON
        ),
        f"{what}: {layout.TRIALS_JSON}",
    )
    return {
        "uri": target.uri,
        "experiment_id": experiment_id,
        "study_run_id": run_id,
        "log_models": spec.tracking.log_models,
        "study": spec.name,
    }


def member_runs(client: MlflowClient, experiment_id: str, study_run_id: str) -> list:
    """The member runs nested under a study run (all statuses), oldest first."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            layout.tags_filter(
                {layout.PARENT_RUN_ID: study_run_id, layout.ROLE: layout.ROLE_MEMBER}
            ),
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def members_table(outcome: StudyOutcome, runs_by_key: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in outcome.members:
        run = runs_by_key.get(m.trial.key)
        metrics = (m.summary or {}).get("metrics", {})
        rows.append(
            {
                "key": m.trial.key,
                "member": m.trial.member,
                "seed": m.trial.seed,
                "values": m.trial.values,
                "status": m.status,
                "error": m.error,
                "run_id": run.info.run_id if run is not None else None,
                "metrics": {
                    k: v
                    for k, v in metrics.items()
                    if k in ("val_acc", "snapshot_test_acc", "polyak_test_acc", "epoch")
                },
            }
        )
    return scrub(rows)


def finish_study(
    tracking: dict[str, Any], outcome: StudyOutcome, status: str | None = None
) -> None:
    """Log the members table and counts on the study run, close it, and close member runs a
    failed/stopped trial left RUNNING. status: FINISHED/FAILED (default: from outcome.ok)."""
    client = MlflowClient(tracking["uri"])
    run_id = tracking["study_run_id"]
    what = f"study {tracking['study']}: summary"
    runs = member_runs(client, tracking["experiment_id"], run_id)
    by_key = {r.data.tags.get(layout.TRIAL_ID): r for r in runs}
    rows = members_table(outcome, by_key)
    for m in outcome.members:
        run = by_key.get(m.trial.key)
        if run is not None and run.info.status == "RUNNING" and m.status in ("failed", "stopped"):
            end = "FAILED" if m.status == "failed" else "KILLED"
            retry_call(lambda r=run, e=end: client.set_terminated(r.info.run_id, e), what)
    counts = Counter(m.status for m in outcome.members)
    # One step per invocation of the study run (tune-001, tune-002, ...): re-runs add a point.
    step = int(outcome.paths.tune_name.rsplit("-", 1)[-1]) if outcome.paths.tune_name else 0
    now = int(time.time() * 1000)
    values = {
        "members_total": len(outcome.members),
        "members_done": counts["done"] + counts["done earlier"],
        "members_failed": counts["failed"],
        "members_stopped": counts["stopped"],
        "members_tracked": sum(1 for r in by_key.values() if r.info.status == "FINISHED"),
    }
    metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
    retry_call(lambda: client.log_batch(run_id, metrics=metrics), what)
    retry_call(
        lambda: client.log_text(run_id, json.dumps(rows, indent=2), layout.MEMBERS_JSON), what
    )
    final = status or ("FINISHED" if outcome.ok else "FAILED")
    RunStatus.from_string(final)  # validates the name
    retry_call(lambda: client.set_terminated(run_id, final), what)
