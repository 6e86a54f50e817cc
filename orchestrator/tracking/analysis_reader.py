"""What the analysis notebook reads besides MemberRecords: metric histories and saved reports.

    study = find_study(resolve_store("runs/my-study"), "my-study")
    members = load_members(study.uri, study.run_id)                     # reader.py
    history = metric_histories(study.uri, [m.run_id for m in members])  # run id -> DataFrame
    saved = latest_ensemble_report(study)                               # None before aggregate

Only reads; the notebook gets everything from MLflow (no study-dir files), so it works the
same against a tracking server as against a study dir's SQLite store.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from orchestrator.tracking import layout
from orchestrator.tracking.reader import StudyRun

# Per-epoch member metrics (member_sink.py logs them with step = epoch).
EPOCH_METRICS = ("train_loss", "train_acc", "val_acc", "val_nll", "lr", "polyak_val_acc")
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class SavedReport:
    run_id: str  # the ensemble run (ensemble.role=ensemble) the report was logged to
    run_name: str
    report: dict[str, Any]  # report.json (orchestrator/ensemble/REPORT_SCHEMA.md)


def metric_histories(
    uri: str, run_ids: Iterable[str], keys: Sequence[str] = EPOCH_METRICS
) -> dict[str, Any]:
    """run id -> pandas DataFrame indexed by epoch (step), one column per metric in `keys`.

    A metric a run never logged is absent from its frame; a value logged twice for one step
    (a resumed member re-running an epoch) keeps the last one logged.
    """
    import pandas as pd

    client = MlflowClient(uri)
    frames = {}
    for run_id in run_ids:
        columns = {}
        for key in keys:
            points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
            if points:
                columns[key] = pd.Series({p.step: p.value for p in points}, dtype=float)
        frame = pd.DataFrame(columns).sort_index()
        frame.index.name = "epoch"
        frames[run_id] = frame
    return frames


def ensemble_runs(study: StudyRun) -> list:
    """The ensemble runs nested under `study`'s run, oldest first."""
    client = MlflowClient(study.uri)
    return client.search_runs(
        [study.experiment_id],
        layout.tags_filter({layout.ROLE: layout.ROLE_ENSEMBLE, layout.PARENT_RUN_ID: study.run_id}),
        max_results=1000,
        order_by=["attributes.start_time ASC"],
    )


def latest_ensemble_report(study: StudyRun) -> SavedReport | None:
    """report.json of the newest ensemble run of `study` holding one; None if none does."""
    client = MlflowClient(study.uri)
    # One small file: MLflow's progress bar would only add noise to the notebook.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for run in reversed(ensemble_runs(study)):
        names = {f.path for f in client.list_artifacts(run.info.run_id)}
        if REPORT_JSON not in names:
            continue
        with tempfile.TemporaryDirectory(prefix="ensemble-report-") as tmp:
            path = client.download_artifacts(run.info.run_id, REPORT_JSON, tmp)
            report = json.loads(Path(path).read_text())
        return SavedReport(run.info.run_id, run.info.run_name, report)
    return None
