"""Each snapshot as an MLflow 3 LoggedModel, linked to the metrics of its epoch (step).

Choices, measured on 2 loaded CPUs (BENCHMARKS.md):
- explicit `pip_requirements`: MLflow otherwise infers them by importing the model in a
  subprocess, 11-14 s per snapshot; with them ~0.1 s.
- "pickle" format, no input_example: the "pt2" format (torch.export) needs an input example and
  takes 1.5-5 s per ResNet-20 snapshot, and an input example alone costs 0.5-2.5 s (MLflow
  runs the model to validate it). A signature inferred from shapes costs nothing. Loading a
  pickled model needs this package importable (`orchestrator.models`); the plain state_dict in
  `snapshots/<k>/model.pt` stays the format for resume, averaging and the aggregator.
- The LoggedModel is created here with the run's experiment id: `mlflow.pytorch.log_model`
  would otherwise look the experiment up from process state and, in a worker that never
  called set_experiment, put the model into "Default".
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature
from torch import nn

from orchestrator.tracking import layout

SERIALIZATION_FORMAT = "pickle"
REQUIRED_PACKAGES = ("torch", "torchvision", "numpy", "cloudpickle")


def pip_requirements() -> list[str]:
    """Pinned versions of what loading a snapshot model needs (local build tags dropped)."""
    pins = []
    for name in REQUIRED_PACKAGES:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover - all come with torch/mlflow
            pins.append(name)
    return pins


class _QuietPickleWarning(logging.Filter):
    # MLflow warns on every pickle-format log; the choice is deliberate (module docstring).
    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


def quiet_mlflow_pytorch() -> None:
    logger = logging.getLogger("mlflow.pytorch")
    if not any(isinstance(f, _QuietPickleWarning) for f in logger.filters):
        logger.addFilter(_QuietPickleWarning())


def input_shape(spec: dict[str, Any], weights: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(channels, height, width) the member's model takes.

    Channels come from the first convolution's weight (C_out, C_in, k, k); the image side from
    the data spec, as data/load.py resolves it.
    """
    from orchestrator.data.info import STANDARD_INFO
    from orchestrator.data.load import IMAGEFOLDER_SIZE, SYNTHETIC_SIZE

    first_conv = next(w for w in weights.values() if w.ndim == 4)
    data = spec["data"]
    if data["name"] in STANDARD_INFO:
        side = STANDARD_INFO[data["name"]].image_size
    else:
        default = SYNTHETIC_SIZE if data["name"] == "synthetic" else IMAGEFOLDER_SIZE
        side = data.get("image_size") or default
    return int(first_conv.shape[1]), side, side


def build_module(
    spec: dict[str, Any], num_classes: int, weights: dict[str, torch.Tensor]
) -> nn.Module:
    """The member's architecture holding `weights`, in eval mode on the CPU."""
    from orchestrator.config import ModelSpec
    from orchestrator.models import create_model

    channels, side, _ = input_shape(spec, weights)
    model_spec = ModelSpec.model_validate({**spec["model"], "init": None})
    module = create_model(
        model_spec, in_channels=channels, image_size=side, num_classes=num_classes
    )
    module.load_state_dict(weights)
    return module.eval()


def log_snapshot_model(
    *,
    experiment_id: str,
    run_id: str,
    module: nn.Module,
    kind: str,
    index: int,
    epoch: int,
    logits: np.ndarray,
    input_chw: tuple[int, int, int],
    tags: dict[str, str],
    params: dict[str, str],
) -> str:
    """Log `module` as LoggedModel "snapshot-<k>" / "polyak-model" at step `epoch`; its id.

    Needs mlflow's tracking URI set to the run's store (log_model reads it from the process).
    A failed attempt's LoggedModel is deleted, so a retry does not leave a FAILED twin behind.
    """
    quiet_mlflow_pytorch()
    client = MlflowClient()
    name = layout.logged_model_name(kind, index)
    model = client.create_logged_model(
        experiment_id=experiment_id,
        name=name,
        source_run_id=run_id,
        tags={
            **tags,
            layout.SNAPSHOT_KIND: kind,
            layout.SNAPSHOT_INDEX: str(index),
            layout.SNAPSHOT_EPOCH: str(epoch),
        },
        params=params,
    )
    signature = infer_signature(
        np.zeros((1, *input_chw), dtype=np.float32), logits[:1].astype(np.float32)
    )
    try:
        mlflow.pytorch.log_model(
            module,
            name=name,
            model_id=model.model_id,
            run_id=run_id,
            step=epoch,
            signature=signature,
            pip_requirements=pip_requirements(),
            serialization_format=SERIALIZATION_FORMAT,
            metadata={"kind": kind, "index": index, "epoch": epoch},
        )
    except Exception:
        try:
            client.delete_logged_model(model.model_id)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    return model.model_id
