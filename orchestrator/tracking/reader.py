"""The aggregator's side: find a study in a store and read its members back as MemberRecords.

`resolve_store("runs/my-study")` -> the study dir's SQLite URI (or a URI as given);
`find_study(uri, "my-study")` -> its latest study run; `load_members(uri, run_id)` -> one
`MemberRecord` per finished member run. Only small files (member.json, spec.json, each
snapshot's metrics.json) are read up front; logits, weights and labels are fetched when a
loader is called, one file at a time. Artifacts of a local (file:) store are read in place;
remote ones (a server proxying S3) are downloaded once into a cache dir.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import ViewType

from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.tracking import layout
from orchestrator.tracking.errors import MissingArtifactError, StudyNotFoundError, TrackingError
from orchestrator.tracking.scrub import scrub_text
from orchestrator.tracking.study import member_runs
from orchestrator.tracking.uri import (
    ARTIFACTS_DIR,
    DB_FILE,
    file_uri_path,
    sqlite_path,
    sqlite_uri,
)

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ensemble-artifacts"


@dataclass(frozen=True)
class StudyRun:
    uri: str
    experiment_id: str
    experiment: str
    run_id: str
    study: str
    run: str  # run-001, run-002 (--fresh)
    status: str


def resolve_store(path_or_uri: str | Path) -> str:
    """A study dir (holding mlflow.db) or a .db file -> its SQLite URI; a URI as it is."""
    text = str(path_or_uri)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.is_dir() and (path / DB_FILE).is_file():
        return sqlite_uri(path / DB_FILE)
    if path.is_file() and path.suffix == ".db":
        return sqlite_uri(path)
    raise TrackingError(
        f"{path} holds no MLflow store ({DB_FILE}); pass a study's output dir (runs/<study>) or "
        "a tracking URI such as http://HOST:5000"
    )


def _study_runs(client: MlflowClient, experiment_ids: list[str], extra: dict[str, str]):
    if not experiment_ids:
        return []
    return client.search_runs(
        experiment_ids,
        layout.tags_filter({layout.ROLE: layout.ROLE_STUDY, **extra}),
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1000,
    )


def _as_study_run(uri: str, client: MlflowClient, run) -> StudyRun:
    tags = run.data.tags
    experiment = client.get_experiment(run.info.experiment_id)
    return StudyRun(
        uri=uri,
        experiment_id=run.info.experiment_id,
        experiment=experiment.name,
        run_id=run.info.run_id,
        study=tags.get(layout.STUDY, ""),
        run=tags.get(layout.RUN, ""),
        status=run.info.status,
    )


def list_studies(uri: str) -> list[StudyRun]:
    """Every study run in the store, by study name then run."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    runs = [_as_study_run(uri, client, r) for r in _study_runs(client, ids, {})]
    return sorted(runs, key=lambda s: (s.study, s.run))


def find_study(uri: str, name_or_experiment: str, run: str | None = None) -> StudyRun:
    """The study run of study (or experiment) `name_or_experiment`: `run` (e.g. "run-002") or
    the latest one."""
    client = MlflowClient(uri)
    extra = {layout.RUN: run} if run else {}
    candidates = []
    experiment = client.get_experiment_by_name(name_or_experiment)
    if experiment is not None and experiment.lifecycle_stage == "active":
        candidates = list(_study_runs(client, [experiment.experiment_id], extra))
        # An experiment shared by studies (tracking.experiment): prefer the study of that name.
        named = [r for r in candidates if r.data.tags.get(layout.STUDY) == name_or_experiment]
        candidates = named or candidates
    if not candidates:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        candidates = list(_study_runs(client, ids, {layout.STUDY: name_or_experiment, **extra}))
    if not candidates:
        known = sorted({f"{s.study} ({s.run})" for s in list_studies(uri)})
        raise StudyNotFoundError(
            f"no study run named {name_or_experiment!r}"
            + (f" with run {run!r}" if run else "")
            + f" in {scrub_text(uri)}; studies there: {', '.join(known) or 'none'}"
        )
    latest = max(candidates, key=lambda r: (r.data.tags.get(layout.RUN, ""), r.info.start_time))
    return _as_study_run(uri, client, latest)


def _local_artifacts(uri: str, recorded: Path, run_id: str) -> Path:
    """Where a run's file: artifacts are now. The store records absolute paths
    (<output>/mlartifacts/<run id>/artifacts); a study dir that was copied or moved has them
    beside its own mlflow.db, and that copy is read, never the original's (gone, or different)."""
    if uri.startswith("sqlite:///"):
        here = sqlite_path(uri).parent / ARTIFACTS_DIR / run_id / "artifacts"
        if here.is_dir():
            return here
    return recorded


class _Artifacts:
    """Files of one run: read in place from a file: store, else downloaded once to `cache`."""

    def __init__(self, uri: str, run, cache: Path, member: str):
        self.uri = uri
        self.run_id = run.info.run_id
        self.member = member
        artifact_uri = run.info.artifact_uri
        self.local_root = (
            _local_artifacts(uri, file_uri_path(artifact_uri), self.run_id)
            if artifact_uri.startswith("file:")
            else None
        )
        self.cache = cache / self.run_id

    def _missing(self, path: str, why: str = "") -> MissingArtifactError:
        return MissingArtifactError(
            f"member {self.member} (run {self.run_id}): artifact {path} is missing in "
            f"{scrub_text(self.uri)}" + (f" ({scrub_text(why)})" if why else "")
        )

    def path(self, artifact_path: str) -> Path:
        if self.local_root is not None:
            local = self.local_root / artifact_path
            if not local.is_file():
                raise self._missing(artifact_path)
            return local
        local = self.cache / artifact_path
        if local.is_file():
            return local
        # One small file at a time: MLflow's progress bar would only add noise.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            mlflow.artifacts.download_artifacts(
                run_id=self.run_id,
                artifact_path=artifact_path,
                dst_path=str(self.cache / Path(artifact_path).parent),
                tracking_uri=self.uri,
            )
        except Exception as exc:
            raise self._missing(
                artifact_path, str(exc).splitlines()[0] if str(exc) else ""
            ) from None
        if not local.is_file():
            raise self._missing(artifact_path)
        return local

    def names(self, client: MlflowClient, artifact_path: str) -> list[str]:
        """Names of the entries in a folder of the run (local copy first, see _local_artifacts)."""
        if self.local_root is not None:
            folder = self.local_root / artifact_path
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        return [Path(f.path).name for f in client.list_artifacts(self.run_id, artifact_path)]

    def json(self, artifact_path: str) -> Any:
        return json.loads(self.path(artifact_path).read_text())


def _snapshot_ref(files: _Artifacts, kind: str, index: int, folder: str) -> SnapshotRef:
    metrics = files.json(f"{folder}/{layout.SNAPSHOT_METRICS}")

    def weights_file() -> Path:
        return files.path(f"{folder}/{layout.SNAPSHOT_WEIGHTS}")

    return SnapshotRef(
        kind=kind,
        index=index,
        epoch=int(metrics.get("epoch", 0)),
        metrics=metrics,
        load_logits=lambda split: np.load(files.path(f"{folder}/{layout.logits_file(split)}")),
        load_weights=lambda: torch.load(weights_file(), map_location="cpu", weights_only=True),
        location=f"runs:/{files.run_id}/{folder}",
        fetch_weights=weights_file,
    )


def _member_record(client: MlflowClient, uri: str, run, cache: Path) -> MemberRecord:
    tags = run.data.tags
    key = tags.get(layout.TRIAL_ID, run.info.run_id)
    files = _Artifacts(uri, run, cache, key)
    meta = files.json(layout.MEMBER_JSON)
    spec = files.json(layout.SPEC_JSON)
    indices = sorted(int(n) for n in files.names(client, layout.SNAPSHOTS_DIR) if n.isdigit())
    snapshots = [
        _snapshot_ref(files, "snapshot", k, f"{layout.SNAPSHOTS_DIR}/{k}") for k in indices
    ]
    has_polyak = layout.SNAPSHOT_METRICS in files.names(client, layout.POLYAK_DIR)
    polyak = _snapshot_ref(files, "polyak", 0, layout.POLYAK_DIR) if has_polyak else None
    return MemberRecord(
        key=key,
        member=int(meta["member"]),
        seed=int(meta["seed"]),
        values=meta.get("values", {}),
        spec=spec,
        data_fingerprint=meta["data_fingerprint"],
        num_classes=int(meta["num_classes"]),
        snapshots=snapshots,
        polyak=polyak,
        load_labels=lambda split: np.load(files.path(layout.labels_file(split))),
        run_id=run.info.run_id,
        extra={"run_name": run.info.run_name, "status": run.info.status},
    )


def load_members(
    uri: str,
    study_run_id: str,
    *,
    cache_dir: str | Path | None = None,
    include_unfinished: bool = False,
) -> list[MemberRecord]:
    """MemberRecords of the member runs nested under `study_run_id`, by member index.

    Only FINISHED runs unless `include_unfinished` (a crashed member's run stays RUNNING and
    may lack its last snapshots). Raises MissingArtifactError naming the member when one of
    its files is missing.
    """
    client = MlflowClient(uri)
    experiment_id = client.get_run(study_run_id).info.experiment_id
    # A finished run's artifacts never change, so downloads are shared by run id; nothing is
    # created for a local store, whose files are read in place.
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    runs = [
        r
        for r in member_runs(client, experiment_id, study_run_id)
        if include_unfinished or r.info.status == "FINISHED"
    ]
    records = [_member_record(client, uri, r, cache) for r in runs]
    return sorted(records, key=lambda r: (r.member, r.key))
