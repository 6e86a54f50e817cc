"""Weight-space ensembles: averaged parameters, evaluated after BatchNorm recalibration.

Every weight ensemble is "average some state_dicts, recalibrate BN on training data, predict":
`average_state_dicts` and `evaluate_weights` here; which weights to average (SWA of snapshots,
uniform and greedy soups, and their pitfalls) is planned in soups.py.

Heavy work (BN recalibration + inference) is expressed as `WeightJob`s (weight_jobs.py) run by
`run_weight_job(job) -> WeightResult`: a plain picklable function call, so the caller chooses
where it runs through an *executor* `executor(list[WeightJob]) -> list[WeightResult]` (same
order). `InProcessExecutor` (default) runs them sequentially here; cluster/ can map them to Ray
tasks on GPUs. Jobs carry weight *paths* when the snapshots are local files (plain pickle
works) or the records' loader callables otherwise (cloudpickle, as Ray uses, is needed then).

The job types and the job planners are re-exported here: `orchestrator.ensemble.weights` is
the one import for everything about weight ensembles.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from orchestrator.config import StudySpec
from orchestrator.data import BatchLoader, DataBundle, load_data
from orchestrator.ensemble.errors import WeightJobError
from orchestrator.ensemble.soups import (
    SoupResult,
    greedy_soup,
    job_for_components,
    snapshot_phase,
    soup_groups,
    soup_job,
    source_of,
    swa_of_final_snapshots,
)
from orchestrator.ensemble.weight_jobs import (
    WEIGHTS_FILE,
    Executor,
    WeightJob,
    WeightResult,
    WeightSource,
    state_dict_of,
)
from orchestrator.models import create_model
from orchestrator.training.averaging import recalibrate_bn
from orchestrator.training.loop import predict_logits
from orchestrator.training.member import resolve_device, resolve_precision

__all__ = [  # this module's names before soups.py and weight_jobs.py were split off
    "WEIGHTS_FILE",
    "Executor",
    "InProcessExecutor",
    "SoupResult",
    "WeightJob",
    "WeightResult",
    "WeightSource",
    "average_state_dicts",
    "build_model",
    "evaluate_weights",
    "greedy_soup",
    "job_for_components",
    "run_weight_job",
    "snapshot_phase",
    "soup_groups",
    "soup_job",
    "source_of",
    "state_dict_of",
    "swa_of_final_snapshots",
]


# Averaging ------------------------------------------------------------------------------
def average_state_dicts(
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted average of state_dicts with identical keys and shapes, streamed one at a time.

    Floating tensors: sum_i w_i * t_i / sum_i w_i, accumulated in float64 and cast back to the
    first dict's dtype (so the average of identical dicts is bitwise the dict itself).
    Integer buffers (BatchNorm's num_batches_tracked) are not averageable: taken from the first.
    BatchNorm running statistics are floating and get averaged too, but they are meaningless
    for averaged weights: recalibrate before evaluating (`evaluate_weights` does).
    """
    total: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    weight_sum = 0.0
    count = 0
    for i, state in enumerate(state_dicts):
        w = 1.0 if weights is None else float(weights[i])
        name = labels[i] if labels is not None else f"state_dict {i}"
        if w < 0:
            raise ValueError(f"{name}: weight {w} < 0")
        if count == 0:
            first = {k: v.detach() for k, v in state.items()}
            total = {k: v.detach().double() * w for k, v in first.items() if v.is_floating_point()}
        else:
            if set(state) != set(first):
                diff = sorted(set(state) ^ set(first))[:5]
                raise ValueError(f"{name}: keys differ from the first state_dict, e.g. {diff}")
            for key, acc in total.items():
                value = state[key]
                if value.shape != acc.shape:
                    raise ValueError(
                        f"{name}: {key} has shape {tuple(value.shape)}, expected {tuple(acc.shape)}"
                    )
                acc += value.detach().double() * w
        weight_sum += w
        count += 1
    if count == 0:
        raise ValueError("average_state_dicts needs at least one state_dict")
    if weight_sum <= 0:
        raise ValueError("the weights sum to zero")
    return {
        key: (total[key] / weight_sum).to(value.dtype) if key in total else value.clone()
        for key, value in first.items()
    }


# Evaluation -----------------------------------------------------------------------------
def build_model(spec: StudySpec, data: DataBundle) -> torch.nn.Module:
    info = data.info
    return create_model(
        spec.model,
        in_channels=info.channels,
        image_size=info.image_size,
        num_classes=info.num_classes,
    )


def evaluate_weights(
    spec: StudySpec | Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    data: DataBundle,
    *,
    bn_batches: int | None = None,
    recalibrate: bool = True,
    splits: Sequence[str] = ("val", "test"),
    device: str = "auto",
    seed: int = 0,
    model_out: list | None = None,
) -> dict[str, np.ndarray]:
    """Logits {split: float32 (N, classes)} of `state_dict` loaded into the spec's model.

    With `recalibrate`, BatchNorm running statistics are first recomputed by a pass over the
    training split (augmented as in training, fixed `seed`; `bn_batches` batches, default the
    whole split): averaged weights come with averaged statistics that match no network.
    `model_out`, when given, receives the evaluated module (to read its recalibrated state).
    """
    spec = spec if isinstance(spec, StudySpec) else StudySpec.model_validate(dict(spec))
    dev = resolve_device(device)
    precision = resolve_precision(spec.train.precision, dev)
    model = build_model(spec, data)
    model.load_state_dict(dict(state_dict))
    model = model.to(device=dev, memory_format=torch.channels_last)
    recalibrated = False
    if recalibrate:
        train_batches = BatchLoader(
            data.train,
            data.info,
            spec.train.batch_size,
            shuffle=True,
            augment=spec.data.augment,
            seed=seed,
            device=dev,
            channels_last=True,
            # A last batch of one image breaks BatchNorm in training mode.
            drop_last=len(data.train) > spec.train.batch_size,
        )
        with torch.no_grad():
            recalibrated = recalibrate_bn(model, train_batches, bn_batches)
    logits = {}
    for split in splits:
        batches = BatchLoader(
            getattr(data, split),
            data.info,
            spec.train.eval_batch_size,
            shuffle=False,
            augment=False,
            device=dev,
            channels_last=True,
        )
        split_logits, _ = predict_logits(model, batches, precision)
        logits[split] = split_logits.numpy().astype(np.float32)
    if model_out is not None:
        model_out.extend([model, recalibrated])
    return logits


# Running jobs ---------------------------------------------------------------------------
def run_weight_job(job: WeightJob, data: DataBundle | None = None) -> WeightResult:
    """Run one weight job; loads the data itself when not given (e.g. inside a Ray task)."""
    start = time.perf_counter()
    if not job.sources:
        raise WeightJobError(f"{job.name}: no weights to average")
    spec = StudySpec.model_validate(job.spec)
    data = data if data is not None else load_data(spec.data)
    averaged = average_state_dicts(
        (s.load_state_dict() for s in job.sources),  # streamed: one state_dict at a time
        [s.weight for s in job.sources],
        [s.label for s in job.sources],
    )
    evaluated: list = []
    try:
        logits = evaluate_weights(
            spec,
            averaged,
            data,
            bn_batches=job.bn_batches,
            recalibrate=job.recalibrate_bn,
            splits=job.splits,
            device=job.device,
            seed=job.seed,
            model_out=evaluated,
        )
    except RuntimeError as exc:  # e.g. load_state_dict: weights of another architecture
        raise WeightJobError(f"{job.name}: cannot evaluate the averaged weights: {exc}") from exc
    model, recalibrated = evaluated
    state = None
    if job.return_state_dict:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return WeightResult(
        name=job.name,
        logits=logits,
        data_fingerprint=data.fingerprint,
        bn_recalibrated=bool(recalibrated),
        seconds=time.perf_counter() - start,
        device=str(next(model.parameters()).device),
        state_dict=state,
        notes=job.notes,
    )


class InProcessExecutor:
    """The default executor: runs jobs one after another in this process.

    Loads each distinct data spec once and reuses it across jobs (members of one study share
    their data), so a study's weight jobs pay for the data set once.
    """

    def __init__(self, data: DataBundle | None = None):
        self._data: dict[str, DataBundle] = {}
        self._given = data

    def _data_for(self, job: WeightJob) -> DataBundle:
        if self._given is not None:
            return self._given
        key = json.dumps(job.spec.get("data", {}), sort_keys=True)
        if key not in self._data:
            self._data = {key: load_data(StudySpec.model_validate(job.spec).data)}
        return self._data[key]

    def __call__(self, jobs: list[WeightJob]) -> list[WeightResult]:
        return [run_weight_job(job, self._data_for(job)) for job in jobs]
