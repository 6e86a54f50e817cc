"""`MlflowMemberSink`: one member's run, nested under the study run (layout.py).

The driver (study.py) created the experiment and the study run; a member only opens runs by
id, so members never race on names and nothing lands in "Default". A member that resumes
(Ray Train restarted its worker, or the study was run again) finds its run again by the tag
`ensemble.trial_id` under the study run and goes on writing to it: one run per member, ever.

What is written, by the primary rank only (rank 0 of a DDP member):
- begin: tags, params (searched values, seed, member), member.json, spec.json, labels;
- log_epoch: the epoch's metrics at step = epoch, then the LoggedModels of snapshots taken in
  that epoch (so `log_model(step=epoch)` links them to that epoch's metrics, which the member
  reports after saving its snapshots);
- save_snapshot: the standard snapshot layout (training/sink.py) under snapshots/<k>/ or
  polyak/, without checkpoint.pt: resume state lives in Ray storage, and it would triple
  the bytes per snapshot;
- end: summary.json, the run FINISHED.
Every write is retried on transient errors (retry.py); one that still fails raises, so the
member fails (and Ray Train retries it) rather than losing a snapshot.

Spec dicts pass through `scrub` before they are logged (model.pt embeds the spec too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric

from orchestrator.tracking import layout
from orchestrator.tracking.retry import retry_call
from orchestrator.tracking.scrub import scrub
from orchestrator.tracking.study import log_params, param_value
from orchestrator.training.sink import MemberInfo, Snapshot, write_snapshot_dir

log = logging.getLogger(__name__)


class MlflowMemberSink:
    def __init__(
        self,
        *,
        uri: str,
        experiment_id: str,
        study_run_id: str,
        study: str,
        trial: dict[str, Any],
        log_models: bool = True,
    ):
        self.uri = uri
        self.experiment_id = experiment_id
        self.study_run_id = study_run_id
        self.study = study
        self.trial = trial  # Trial.to_dict(): key, member, seed, config_index, values
        self.log_models = log_models
        self.run_id: str | None = None
        # Seconds spent per snapshot (staging + upload) and per LoggedModel: BENCHMARKS.md.
        self.timings: dict[str, list[float]] = {"snapshot_s": [], "model_s": []}
        self._info: MemberInfo | None = None
        self._client: MlflowClient | None = None
        self._pending: list[Snapshot] = []  # snapshots whose LoggedModel waits for its epoch
        self._module = None  # the member's architecture, built once for LoggedModels
        self._staging: Path | None = None  # local files on their way to MLflow

    @classmethod
    def from_config(cls, tracking: dict[str, Any], trial: dict[str, Any]) -> MlflowMemberSink:
        """From study.start_study's dict and a Trial dict (what a Ray worker receives)."""
        return cls(
            uri=tracking["uri"],
            experiment_id=tracking["experiment_id"],
            study_run_id=tracking["study_run_id"],
            study=tracking["study"],
            trial=trial,
            log_models=bool(tracking.get("log_models", True)),
        )

    @property
    def key(self) -> str:
        return self.trial["key"]

    def _what(self, detail: str) -> str:
        return f"member {self.key} ({self.study}): {detail}"

    def _writes(self) -> bool:
        return self._info is not None and self._info.is_primary and self.run_id is not None

    # MemberSink ---------------------------------------------------------------------------
    def begin(self, info: MemberInfo) -> None:
        self._info = info
        if not info.is_primary:
            return
        # log_model reads the tracking URI from process state; the client uses it explicitly.
        mlflow.set_tracking_uri(self.uri)
        self._client = MlflowClient(self.uri)
        self._staging = Path(tempfile.mkdtemp(prefix="ensemble-mlflow-"))
        identity = {
            layout.PARENT_RUN_ID: self.study_run_id,
            layout.ROLE: layout.ROLE_MEMBER,
            layout.TRIAL_ID: self.key,
        }
        tags = {
            **identity,
            layout.STUDY: self.study,
            layout.MEMBER: str(info.member),
            layout.SEED: str(info.seed),
            layout.TRIAL_KEY: self.key,
            layout.DATA_FINGERPRINT: info.data_fingerprint,
        }
        self.run_id = retry_call(lambda: self._find_or_create(identity, tags), self._what("run"))
        params = {k: param_value(v) for k, v in scrub(self.trial["values"]).items()}
        params |= {"seed": str(info.seed), "member": str(info.member)}
        # Only the missing ones: a re-opened run keeps its params (MLflow forbids changing them).
        log_params(self._client, self.run_id, params, self._what("params"))
        root = self._staging / "root"
        root.mkdir(exist_ok=True)
        meta = info.meta() | {"key": self.key, "values": self.trial["values"]}
        (root / layout.MEMBER_JSON).write_text(json.dumps(scrub(meta), indent=2))
        (root / layout.SPEC_JSON).write_text(json.dumps(scrub(info.spec), indent=2))
        np.save(root / layout.labels_file("val"), info.labels_val)
        np.save(root / layout.labels_file("test"), info.labels_test)
        self._log_dir(root, None, self._what("member.json and labels"))
        shutil.rmtree(root, ignore_errors=True)

    def _find_or_create(self, identity: dict[str, str], tags: dict[str, str]) -> str:
        # Searching first also makes a retried creation find a run a lost response created.
        found = self._client.search_runs(
            [self.experiment_id],
            layout.tags_filter(identity),
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run_id = found[0].info.run_id
            self._client.update_run(run_id, status="RUNNING")
            log.info("member %s re-opens its MLflow run %s", self.key, run_id)
            return run_id
        run = self._client.create_run(
            self.experiment_id,
            run_name=layout.member_run_name(self.study, self.key),
            tags=tags,
        )
        return run.info.run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self._writes():
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, epoch)
            for key, value in metrics.items()
            if isinstance(value, int | float | np.number) and not isinstance(value, bool)
        ]
        retry_call(
            lambda: self._client.log_batch(self.run_id, metrics=batch),
            self._what(f"metrics of epoch {epoch}"),
        )
        self._flush_models(up_to_epoch=epoch)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if not self._writes():
            return
        info = self._info
        start = time.perf_counter()
        # checkpoint.pt (optimizer, scheduler, Polyak state) stays in Ray storage only.
        light = dataclasses.replace(snapshot, resume_state=None)
        staged = write_snapshot_dir(light, self._staging / "snapshot", scrub(info.spec), info.seed)
        self._log_dir(staged, snapshot.relative_dir, self._what(snapshot.relative_dir))
        self.timings["snapshot_s"].append(time.perf_counter() - start)
        shutil.rmtree(staged, ignore_errors=True)
        if self.log_models:
            self._pending.append(light)

    def load_latest(self) -> dict[str, Any] | None:
        """None: resume state comes from Ray storage (FanoutSink asks its first sink)."""
        return None

    def end(self, summary: dict[str, Any]) -> None:
        if not self._writes():
            return
        self._flush_models(up_to_epoch=None)
        timing = {k: round(sum(v), 3) for k, v in self.timings.items()}
        payload = scrub(summary) | {"tracking": timing}
        retry_call(
            lambda: self._client.log_text(
                self.run_id, json.dumps(payload, indent=2), layout.SUMMARY_JSON
            ),
            self._what(layout.SUMMARY_JSON),
        )
        retry_call(lambda: self._client.set_terminated(self.run_id, "FINISHED"), self._what("end"))
        shutil.rmtree(self._staging, ignore_errors=True)

    # Helpers ------------------------------------------------------------------------------
    def _log_dir(self, local: Path, artifact_path: str | None, what: str) -> None:
        retry_call(lambda: self._client.log_artifacts(self.run_id, str(local), artifact_path), what)

    def _flush_models(self, up_to_epoch: int | None) -> None:
        """Log the pending LoggedModels of snapshots taken up to `up_to_epoch` (None: all)."""
        due = [s for s in self._pending if up_to_epoch is None or s.epoch <= up_to_epoch]
        for snap in due:
            name = layout.logged_model_name(snap.kind, snap.index)
            start = time.perf_counter()
            retry_call(lambda s=snap: self._log_model(s), self._what(f"LoggedModel {name}"))
            self.timings["model_s"].append(time.perf_counter() - start)
            self._pending.remove(snap)

    def _log_model(self, snap: Snapshot) -> None:
        from orchestrator.tracking.logged_model import build_module, input_shape, log_snapshot_model

        info = self._info
        if self._module is None:
            self._module = build_module(info.spec, info.num_classes, snap.weights)
        self._module.load_state_dict(snap.weights)
        log_snapshot_model(
            experiment_id=self.experiment_id,
            run_id=self.run_id,
            module=self._module,
            kind=snap.kind,
            index=snap.index,
            epoch=snap.epoch,
            logits=snap.logits_val,
            input_chw=input_shape(info.spec, snap.weights),
            tags={
                layout.STUDY: self.study,
                layout.TRIAL_ID: self.key,
                layout.MEMBER: str(info.member),
                layout.SEED: str(info.seed),
            },
            params={k: param_value(v) for k, v in scrub(self.trial["values"]).items()},
        )
