"""What a weight job is: picklable descriptions of "average these weights, evaluate them".

A `WeightJob` names its `WeightSource`s (where each set of weights is, and its weight in the
average) and how to evaluate the average; `weights.run_weight_job` runs it and returns a
`WeightResult`. An `Executor` maps a list of jobs to their results (same order), so the caller
chooses where the heavy work runs (in process, or Ray tasks on GPUs from cluster/). Jobs carry
weight *paths* when the snapshots are local files (plain pickle works) or the records' loader
callables otherwise (cloudpickle, as Ray uses, is needed then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.ensemble.errors import WeightJobError

WEIGHTS_FILE = "model.pt"


def state_dict_of(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The model state_dict of a snapshot's model.pt dict ({"model": ..., ...}) or a raw one."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state_dict, got {type(checkpoint).__name__}")
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


@dataclass(frozen=True)
class WeightSource:
    """One ingredient of an average: where its weights are, and its weight in the average."""

    label: str  # e.g. "m000-bf21a9e8/snapshot/2": names the member in error messages
    weight: float = 1.0
    path: str | None = None  # model.pt or the snapshot dir holding it (local or shared FS)
    loader: Callable[[], Any] | None = None  # e.g. SnapshotRef.load_weights (remote artifacts)

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        try:
            if self.loader is not None:
                checkpoint = self.loader()
            elif self.path is not None:
                path = Path(self.path)
                path = path / WEIGHTS_FILE if path.is_dir() else path
                # weights_only: a checkpoint is data; never run pickled code from it.
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise ValueError("the source has neither a path nor a loader")
            return state_dict_of(checkpoint)
        except Exception as exc:  # files: OSError; torch: RuntimeError; MLflow loaders: own
            where = self.path or "its loader"
            raise WeightJobError(f"{self.label}: cannot load weights from {where}: {exc}") from exc


@dataclass(frozen=True)
class WeightJob:
    """Average `sources`, optionally recalibrate BN, predict `splits`. Picklable by design.

    spec: the resolved StudySpec dict of the members (model to build; data to recalibrate on
    and to predict; train.batch_size / eval_batch_size / precision).
    """

    name: str
    spec: dict[str, Any]
    sources: tuple[WeightSource, ...]
    splits: tuple[str, ...] = ("val", "test")
    recalibrate_bn: bool = True
    bn_batches: int | None = None
    device: str = "auto"  # "auto": the GPU when the executing process sees one
    seed: int = 0  # order/augmentation of the recalibration pass
    return_state_dict: bool = False  # also send back the averaged, recalibrated weights
    notes: tuple[str, ...] = ()


@dataclass
class WeightResult:
    name: str
    logits: dict[str, np.ndarray]  # split -> float32 (N, classes)
    data_fingerprint: str
    bn_recalibrated: bool
    seconds: float
    device: str
    state_dict: dict[str, torch.Tensor] | None = None
    notes: tuple[str, ...] = ()


Executor = Callable[[list[WeightJob]], list[WeightResult]]
