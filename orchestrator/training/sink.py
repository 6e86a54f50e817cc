"""The only door between a training member and the outside world.

`train_member` reports through a `MemberSink`; cluster/ implements it with Ray Train
checkpoints, tracking/ with MLflow, and `DirectorySink` (here) with plain files for
`ensemble train-member` and tests. training/ therefore never imports ray or mlflow.

A snapshot directory has the same layout everywhere (the MLflow contract in DESIGN.md):
    model.pt          {"model": state_dict, "epoch", "kind", "index", "spec", "seed"} (weights only)
    checkpoint.pt     full resume state (model, optimizer, scheduler, polyak, epoch, ...)
    logits_val.npy    float32 (N_val, classes), in the shared validation order
    logits_test.npy   float32 (N_test, classes)
    metrics.json      val/test accuracy and NLL of these weights
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

SNAPSHOTS_DIR = "snapshots"
POLYAK_DIR = "polyak"


@dataclass
class MemberInfo:
    """Identity of a member and of the data it sees; written once when training starts."""

    study: str
    member: int
    seed: int
    data_fingerprint: str
    num_classes: int
    snapshot_epochs: list[int]
    spec: dict[str, Any]
    labels_val: np.ndarray
    labels_test: np.ndarray
    is_primary: bool = True  # rank 0 of a DDP member; only it writes

    def meta(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "member": self.member,
            "seed": self.seed,
            "data_fingerprint": self.data_fingerprint,
            "num_classes": self.num_classes,
            "snapshot_epochs": self.snapshot_epochs,
            "num_val": int(len(self.labels_val)),
            "num_test": int(len(self.labels_test)),
        }


@dataclass
class Snapshot:
    """Weights and predictions at one point of a member's training.

    kind "snapshot": index k = 0, 1, ... (cycle ends / snapshot epochs);
    kind "polyak": the averaged (EMA/SWA) weights after BN recalibration, index 0.
    """

    kind: str
    index: int
    epoch: int
    weights: dict[str, torch.Tensor]
    logits_val: np.ndarray
    logits_test: np.ndarray
    metrics: dict[str, float]
    resume_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_dir(self) -> str:
        return POLYAK_DIR if self.kind == "polyak" else f"{SNAPSHOTS_DIR}/{self.index}"


class MemberSink(Protocol):
    def begin(self, info: MemberInfo) -> None: ...

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def load_latest(self) -> dict[str, Any] | None:
        """Resume state of the latest snapshot, or None to start from scratch."""
        ...

    def end(self, summary: dict[str, Any]) -> None: ...


# Snapshot directories -------------------------------------------------------------------
def write_snapshot_dir(snapshot: Snapshot, path: Path, spec: dict[str, Any], seed: int) -> Path:
    """Write `snapshot` to `path` atomically (temp dir + rename): a crash never leaves half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        weights = {
            "model": snapshot.weights,
            "kind": snapshot.kind,
            "index": snapshot.index,
            "epoch": snapshot.epoch,
            "seed": seed,
            "spec": spec,
        }
        torch.save(weights, tmp / "model.pt")
        if snapshot.resume_state is not None:
            torch.save(snapshot.resume_state, tmp / "checkpoint.pt")
        np.save(tmp / "logits_val.npy", snapshot.logits_val.astype(np.float32))
        np.save(tmp / "logits_test.npy", snapshot.logits_test.astype(np.float32))
        (tmp / "metrics.json").write_text(json.dumps(snapshot.metrics | {"epoch": snapshot.epoch}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_resume_state(snapshot_dir: Path) -> dict[str, Any]:
    return torch.load(Path(snapshot_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)


def latest_snapshot_dir(member_dir: Path) -> Path | None:
    """The snapshot dir with the highest index that holds a resume checkpoint."""
    root = Path(member_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.name.isdigit() and (p / "checkpoint.pt").is_file()]
    return max(done, key=lambda p: int(p.name), default=None)


class DirectorySink:
    """A member's results as plain files under one directory (see module docstring)."""

    def __init__(self, member_dir: str | Path, echo=None):
        self.dir = Path(member_dir)
        self.echo = echo  # callable(epoch, metrics) for progress output, or None
        self._info: MemberInfo | None = None

    def begin(self, info: MemberInfo) -> None:
        self._info = info
        if not info.is_primary:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "member.json").write_text(json.dumps(info.meta(), indent=2))
        np.save(self.dir / "labels_val.npy", info.labels_val)
        np.save(self.dir / "labels_test.npy", info.labels_test)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._info is not None and not self._info.is_primary:
            return
        with open(self.dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
        if self.echo is not None:
            self.echo(epoch, metrics)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        info = self._info
        if info is not None and not info.is_primary:
            return
        write_snapshot_dir(snapshot, self.dir / snapshot.relative_dir, info.spec, info.seed)

    def load_latest(self) -> dict[str, Any] | None:
        latest = latest_snapshot_dir(self.dir)
        return read_resume_state(latest) if latest is not None else None

    def end(self, summary: dict[str, Any]) -> None:
        if self._info is not None and not self._info.is_primary:
            return
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2))


# Reading back ---------------------------------------------------------------------------
@dataclass
class StoredSnapshot:
    kind: str
    index: int
    path: Path
    metrics: dict[str, float]

    def logits(self, split: str) -> np.ndarray:
        return np.load(self.path / f"logits_{split}.npy")


def read_member_dir(
    member_dir: str | Path,
) -> tuple[dict[str, Any], list[StoredSnapshot], StoredSnapshot | None]:
    """(member.json, snapshots in index order, polyak or None) of a DirectorySink folder."""
    member_dir = Path(member_dir)
    meta_file = member_dir / "member.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{member_dir} holds no trained member (member.json missing)")
    meta = json.loads(meta_file.read_text())

    def stored(kind: str, index: int, path: Path) -> StoredSnapshot:
        return StoredSnapshot(kind, index, path, json.loads((path / "metrics.json").read_text()))

    root = member_dir / SNAPSHOTS_DIR
    indices = (
        sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
    )
    snapshots = [stored("snapshot", k, root / str(k)) for k in indices]
    polyak_dir = member_dir / POLYAK_DIR
    polyak = stored("polyak", 0, polyak_dir) if (polyak_dir / "metrics.json").is_file() else None
    return meta, snapshots, polyak


class FanoutSink:
    """Several sinks as one: every event goes to each; resume state comes from the first."""

    def __init__(self, sinks: list[MemberSink]):
        if not sinks:
            raise ValueError("FanoutSink needs at least one sink")
        self.sinks = sinks

    def begin(self, info: MemberInfo) -> None:
        for sink in self.sinks:
            sink.begin(info)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        # Storage-like sinks last: a Ray report is a barrier and may hand over a checkpoint.
        for sink in reversed(self.sinks):
            sink.log_epoch(epoch, metrics)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        for sink in self.sinks:
            sink.save_snapshot(snapshot)

    def load_latest(self) -> dict[str, Any] | None:
        return self.sinks[0].load_latest()

    def end(self, summary: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.end(summary)
