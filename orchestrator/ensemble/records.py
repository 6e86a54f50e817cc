"""What the aggregator knows about a finished member: identity, and lazy access to its results.

Readers (tracking/ for MLflow, `from_member_dir` for plain directories) build these records;
the aggregator only calls the loaders, one member at a time, so members are streamed rather
than all held in memory, and nothing is downloaded that a method does not need.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLITS = ("val", "test")


@dataclass(frozen=True)
class SnapshotRef:
    """One stored set of weights: a snapshot (kind "snapshot", index k) or Polyak weights."""

    kind: str
    index: int
    epoch: int
    metrics: dict[str, float]
    load_logits: Callable[[str], np.ndarray]  # split ("val" | "test") -> float32 (N, classes)
    load_weights: Callable[[], dict[str, Any]]  # the model.pt dict: {"model": state_dict, ...}
    location: str = ""  # where it lives (path or artifact URI), for messages
    # The local model.pt (fetched first when the store is remote), for code that needs a file.
    fetch_weights: Callable[[], Path] | None = None


@dataclass(frozen=True)
class MemberRecord:
    key: str  # trial key, e.g. m000-bf21a9e8
    member: int
    seed: int
    values: dict[str, Any]  # searched values of this member's configuration
    spec: dict[str, Any]  # the member's resolved study spec (StudySpec.to_dict())
    data_fingerprint: str
    num_classes: int
    snapshots: list[SnapshotRef]
    polyak: SnapshotRef | None
    load_labels: Callable[[str], np.ndarray]  # split -> int64 (N,)
    run_id: str | None = None  # MLflow run of the member, when tracked
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.key


def from_member_dir(member_dir: str | Path, key: str | None = None) -> MemberRecord:
    """A record for a member stored in the standard layout (DirectorySink or a Ray checkpoint
    dir with member.json beside snapshot folders)."""
    root = Path(member_dir)
    if not (root / "member.json").is_file():
        raise FileNotFoundError(f"{root} holds no trained member (member.json missing)")
    meta = json.loads((root / "member.json").read_text())

    def ref(kind: str, index: int, path: Path) -> SnapshotRef:
        metrics = json.loads((path / "metrics.json").read_text())
        return SnapshotRef(
            kind=kind,
            index=index,
            epoch=int(metrics.get("epoch", 0)),
            metrics=metrics,
            load_logits=lambda split, p=path: np.load(p / f"logits_{split}.npy"),
            load_weights=lambda p=path: torch.load(
                p / "model.pt", map_location="cpu", weights_only=True
            ),
            location=str(path),
            fetch_weights=lambda p=path: p / "model.pt",
        )

    snap_root = root / "snapshots"
    indices = (
        sorted(int(p.name) for p in snap_root.iterdir() if p.name.isdigit())
        if snap_root.is_dir()
        else []
    )
    snapshots = [ref("snapshot", k, snap_root / str(k)) for k in indices]
    polyak = ref("polyak", 0, root / "polyak") if (root / "polyak/metrics.json").is_file() else None
    spec = json.loads((root / "spec.json").read_text()) if (root / "spec.json").is_file() else {}
    if not spec and snapshots:
        try:  # the resolved spec travels inside every model.pt
            spec = snapshots[0].load_weights().get("spec", {})
        except OSError:
            spec = {}  # no weights here (cached logits only): prediction ensembles still work
    return MemberRecord(
        key=key or f"member-{meta['member']:03d}",
        member=int(meta["member"]),
        seed=int(meta["seed"]),
        values={},
        spec=spec,
        data_fingerprint=meta["data_fingerprint"],
        num_classes=int(meta["num_classes"]),
        snapshots=snapshots,
        polyak=polyak,
        load_labels=lambda split: np.load(root / f"labels_{split}.npy"),
    )
