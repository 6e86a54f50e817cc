"""`ensemble aggregate`: a finished study -> ensembles, report, MLflow ensemble run.

Members are read back through tracking/ (the MLflow contract), combined by ensemble/ from
their cached logits, and weight-space ensembles (SWA of snapshots, soups) run as Ray tasks,
on a GPU when the cluster has one. The report goes to `<study dir>/report/` (a new numbered
folder when one exists: nothing earlier is overwritten) and to an `ensemble` run nested under
the study run, with the best ensemble logged as a pyfunc model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import StudySpec
from orchestrator.ensemble import AggregateOptions, Report, aggregate, write_report
from orchestrator.ensemble.records import MemberRecord
from orchestrator.ensemble.weights import job_for_components
from orchestrator.tracking.reader import StudyRun, find_study, load_members, resolve_store

REPORT_DIR = "report"


class StudyLookupError(ValueError):
    pass


@dataclass
class Aggregation:
    study: StudyRun
    report: Report
    report_dir: Path
    ensemble_run_id: str | None


def locate_study(
    target: str, store: str | None = None, run: str | None = None
) -> tuple[StudyRun, Path | None]:
    """A study dir (runs/<study>) or a study name in `store` / MLFLOW_TRACKING_URI."""
    path = Path(target)
    if path.is_dir():
        uri = resolve_store(path)
        spec_file = path / "study.yaml"
        if not spec_file.is_file():
            raise StudyLookupError(f"{path} has no study.yaml: is it a study's output dir?")
        import yaml

        name = yaml.safe_load(spec_file.read_text())["name"]
        return find_study(uri, name, run), path
    uri = store or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise StudyLookupError(
            f"{target!r} is not a study dir; to find a study by name give --store URI "
            "(or set MLFLOW_TRACKING_URI)"
        )
    return find_study(resolve_store(uri), target, run), None


def input_info(spec: dict[str, Any]) -> dict[str, Any]:
    """What the served model needs to shape and normalise raw images."""
    from orchestrator.data import load_data

    info = load_data(StudySpec.model_validate(spec).data).info
    return {
        "channels": info.channels,
        "image_size": info.image_size,
        "num_classes": info.num_classes,
        "mean": list(info.mean),
        "std": list(info.std),
    }


def best_model_components(
    report: Report, members: list[MemberRecord], executor
) -> list[tuple[dict, float]]:
    """(model.pt dict, weight) per network of the best ensemble, ready to serve."""
    entry = report.ensemble(report.best_ensemble)
    components = entry.components
    if entry.kind == "weight":
        job = job_for_components(
            entry.name,
            members,
            components,
            return_state_dict=True,
            bn_batches=report.options.get("bn_batches"),
        )
        (result,) = executor([job])
        return [({"model": result.state_dict}, 1.0)]
    by_key = {m.key: m for m in members}
    out = []
    for comp in components:
        member = by_key[comp["member"]]
        refs = [member.polyak] if comp["kind"] == "polyak" else member.snapshots
        ref = next(r for r in refs if r is not None and r.index == comp["index"])
        out.append((ref.load_weights(), float(comp["weight"])))
    return out


def aggregate_study(
    target: str,
    *,
    store: str | None = None,
    run: str | None = None,
    options: AggregateOptions | None = None,
    output: Path | None = None,
    overwrite: bool = False,
    log_to_mlflow: bool = True,
    address: str | None = None,
) -> Aggregation:
    from orchestrator.cluster.session import connect
    from orchestrator.cluster.weight_tasks import RayWeightExecutor

    # Progress bars per artifact file would drown the report in the terminal.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    study, study_dir = locate_study(target, store, run)
    members = load_members(study.uri, study.run_id)
    options = options or AggregateOptions(study=study.study)
    connect(address)
    executor = RayWeightExecutor()
    report = aggregate(members, options, executor=executor)
    out = output or (
        study_dir / REPORT_DIR if study_dir else Path("runs") / study.study / REPORT_DIR
    )
    report_dir = write_report(report, out, overwrite=overwrite)
    run_id = None
    if log_to_mlflow:
        from orchestrator.tracking.ensemble_run import log_ensemble_run

        model = None
        if report.best_ensemble:
            spec = members[0].spec
            model = {
                "spec": spec,
                "input_info": input_info(spec),
                "components": best_model_components(report, members, executor),
                "name": "best-ensemble",
            }
        run_id = log_ensemble_run(study, json.loads(report.to_json()), report_dir, model)
    return Aggregation(study, report, report_dir, run_id)
