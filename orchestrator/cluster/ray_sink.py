"""A `MemberSink` that turns a member's snapshots into Ray Train checkpoints.

Every epoch is one `ray.train.report` on every worker (it is a barrier: all ranks must call
it equally often). An epoch that ends with a snapshot reports a checkpoint directory named
`snapshot_<k>` holding the standard snapshot layout (training/sink.py) plus the member's
identity (member.json, labels) and, for the final snapshot, the Polyak weights under
`polyak/`. Resume reads `checkpoint.pt` of `ray.train.get_checkpoint()`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray.train

from orchestrator.training.sink import MemberInfo, Snapshot, read_resume_state, write_snapshot_dir

CHECKPOINT_PREFIX = "snapshot_"


class RayTrainSink:
    def __init__(self, extra_metrics: dict[str, Any] | None = None):
        self.extra = extra_metrics or {}
        self._info: MemberInfo | None = None
        self._staging = Path(tempfile.mkdtemp(prefix="ensemble-snapshot-"))
        self._pending: tuple[int, Path] | None = None

    def begin(self, info: MemberInfo) -> None:
        self._info = info

    def _stage_identity(self, root: Path) -> None:
        info = self._info
        (root / "member.json").write_text(json.dumps(info.meta(), indent=2))
        np.save(root / "labels_val.npy", info.labels_val)
        np.save(root / "labels_test.npy", info.labels_test)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if not self._info.is_primary:
            # Other ranks still report (barrier) but without a checkpoint.
            if snapshot.kind == "snapshot":
                self._pending = (snapshot.index, None)
            return
        if snapshot.kind == "polyak":
            # Stored inside the next (final) snapshot's checkpoint, see training/member.py.
            write_snapshot_dir(snapshot, self._staging / "polyak", self._info.spec, self._info.seed)
            return
        target = self._staging / f"{CHECKPOINT_PREFIX}{snapshot.index:03d}"
        write_snapshot_dir(snapshot, target, self._info.spec, self._info.seed)
        self._stage_identity(target)
        if (self._staging / "polyak").is_dir():
            shutil.move(str(self._staging / "polyak"), target / "polyak")
        self._pending = (snapshot.index, target)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        payload = {**metrics, **self.extra, "epoch": epoch}
        if self._pending is None:
            ray.train.report(payload)
            return
        index, directory = self._pending
        self._pending = None
        checkpoint = ray.train.Checkpoint.from_directory(str(directory)) if directory else None
        ray.train.report(
            payload, checkpoint=checkpoint, checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{index:03d}"
        )
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)  # persisted to storage by now

    def load_latest(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return read_resume_state(Path(directory))

    def end(self, summary: dict[str, Any]) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
