"""The aggregator's MLflow run: nested under the study run, `ensemble.role=ensemble`.

Metrics per ensemble entry (`<entry>/test_acc`, `<entry>/gain_over_mean_single`, ...), the
report files as artifacts (report.json, report.md, plots/), and the best ensemble as a pyfunc
model. Each aggregation is a new run `<study>/<run>/ensemble-<n>`: re-aggregating never
overwrites an earlier report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from orchestrator.tracking import layout
from orchestrator.tracking.reader import StudyRun
from orchestrator.tracking.retry import retry_call

ENTRY_METRICS = ("test_acc", "test_nll", "test_ece", "test_brier", "val_acc", "val_nll")


def metric_name(entry: str, metric: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces.
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", f"{entry}/{metric}")


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for entry in report["ensembles"]:
        for name in ENTRY_METRICS:
            value = entry["metrics"].get(name)
            if value is not None:
                metrics[metric_name(entry["name"], name)] = float(value)
        for gain in ("gain_over_best_single", "gain_over_mean_single"):
            if entry.get(gain) is not None:
                metrics[metric_name(entry["name"], gain)] = float(entry[gain])
    baseline = report["baseline"]
    metrics["best_single/test_acc"] = float(baseline["best_single"]["test_acc"])
    metrics["mean_single/test_acc"] = float(baseline["mean_single"]["test_acc"])
    best = report.get("best_ensemble")
    if best:
        entry = next(e for e in report["ensembles"] if e["name"] == best)
        metrics["best_ensemble/test_acc"] = float(entry["metrics"]["test_acc"])
        metrics["best_ensemble/gain_over_mean_single"] = float(entry["gain_over_mean_single"])
    return metrics


def next_run_name(client: MlflowClient, study: StudyRun) -> str:
    existing = client.search_runs(
        [study.experiment_id],
        layout.tags_filter({layout.ROLE: layout.ROLE_ENSEMBLE, layout.PARENT_RUN_ID: study.run_id}),
        max_results=1000,
    )
    return f"{study.study}/{study.run}/ensemble-{len(existing) + 1}"


def log_ensemble_run(
    study: StudyRun,
    report: dict[str, Any],
    report_dir: Path,
    model: dict[str, Any] | None = None,
) -> str:
    """Log the aggregation; `model`: kwargs of pyfunc_model.log_ensemble_model or None.

    Returns the ensemble run id.
    """
    from orchestrator.tracking.pyfunc_model import log_ensemble_model

    mlflow.set_tracking_uri(study.uri)
    client = MlflowClient(study.uri)
    run_name = next_run_name(client, study)
    tags = {
        layout.ROLE: layout.ROLE_ENSEMBLE,
        layout.STUDY: study.study,
        layout.RUN: study.run,
        "ensemble.best": report.get("best_ensemble") or "",
    }
    with mlflow.start_run(
        experiment_id=study.experiment_id,
        parent_run_id=study.run_id,
        run_name=run_name,
        tags=tags,
    ) as run:
        metrics = report_metrics(report)
        retry_call(lambda: mlflow.log_metrics(metrics), f"{run_name} metrics")
        retry_call(lambda: mlflow.log_artifacts(str(report_dir)), f"{run_name} report")
        if model is not None:
            retry_call(lambda: log_ensemble_model(**model), f"{run_name} best-ensemble model")
        return run.info.run_id
