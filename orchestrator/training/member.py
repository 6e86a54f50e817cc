"""One ensemble member's lifecycle: build, (resume), train with snapshots, Polyak-average.

`train_member(spec, sink)` is the single entry point used by a unit test, by
`ensemble train-member` (in-process) and by a Ray Train worker (cluster/). Everything that
leaves the member goes through `sink` (see sink.py).

Distributed: if `torch.distributed` is initialised (Ray Train sets it up for
workers_per_member > 1), the model is wrapped in DDP and each rank trains on its shard;
every rank evaluates the full val/test splits (identical logits) and only rank 0 writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from orchestrator.config import StudySpec
from orchestrator.data import BatchLoader, DataBundle, load_data
from orchestrator.models import apply_init, create_model, freeze_for_transfer
from orchestrator.models.transfer import set_frozen_bn_eval
from orchestrator.training.averaging import Polyak, recalibrate_bn
from orchestrator.training.loop import Precision, evaluate, train_one_epoch
from orchestrator.training.schedules import SchedulePlan
from orchestrator.training.sink import MemberInfo, MemberSink, Snapshot

log = logging.getLogger(__name__)

# BatchNorm recalibration batches for the per-epoch `polyak_val_acc` curve: enough for stable
# statistics, cheap next to an epoch. Snapshot/final Polyak weights use a full pass (or bn_batches).
EPOCH_BN_BATCHES = 8


class ResumeMismatchError(RuntimeError):
    """The stored snapshot belongs to a different member or data split."""


@dataclass
class MemberResult:
    member: int
    seed: int
    epochs_trained: int
    resumed_from_epoch: int
    snapshots: list[dict[str, float]]
    polyak: dict[str, float] | None


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if requested == "bf16" or (requested == "auto" and device.type == "cuda"):
        return Precision(device.type, torch.bfloat16)
    return Precision(device.type, None)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_member(
    spec: StudySpec,
    sink: MemberSink,
    *,
    member: int = 0,
    seed: int | None = None,
    data: DataBundle | None = None,
    device: torch.device | None = None,
) -> MemberResult:
    """Train member `member` of `spec` (seed defaults to spec.seeds()[member])."""
    seed = spec.seeds()[member % len(spec.seeds())] if seed is None else seed
    rank, world = _rank_and_world()
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    device = device or resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    if device.type == "cpu":
        # Bitwise-repeatable on CPU; on CUDA we keep cuDNN's fast non-deterministic kernels.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True

    data = data or load_data(spec.data, member_seed=seed)
    info = data.info
    torch.manual_seed(seed)
    model = create_model(
        spec.model,
        in_channels=info.channels,
        image_size=info.image_size,
        num_classes=info.num_classes,
    )
    trainable = list(model.parameters())
    init = spec.model.transfer
    if init is not None:
        apply_init(model, init)
        trainable = freeze_for_transfer(model, init)
    # channels_last: ~4x faster convolutions on CPU (REFERENCES.md), and the layout tensor
    # cores prefer for bf16 on CUDA.
    model = model.to(device=device, memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def loader(split, *, train: bool) -> BatchLoader:
        return BatchLoader(
            split,
            info,
            spec.train.batch_size if train else spec.train.eval_batch_size,
            shuffle=train,
            augment=train and spec.data.augment,
            seed=seed,
            device=device,
            channels_last=True,
            # A last batch of one image breaks BatchNorm in training mode.
            drop_last=train and len(split) // world > spec.train.batch_size,
            rank=rank if train else 0,
            world_size=world if train else 1,
        )

    train_batches = loader(data.train, train=True)
    val_batches, test_batches = loader(data.val, train=False), loader(data.test, train=False)
    optimizer = torch.optim.SGD(
        trainable,
        lr=spec.train.lr,
        momentum=spec.train.momentum,
        nesterov=spec.train.nesterov and spec.train.momentum > 0,
        weight_decay=spec.train.weight_decay,
    )
    plan = SchedulePlan.from_spec(spec, len(train_batches))
    scheduler = plan.scheduler(optimizer)
    polyak = Polyak(model, spec.polyak)
    snapshot_epochs = plan.snapshot_epochs()
    spec_dict = spec.to_dict()

    start_epoch = 0
    state = sink.load_latest()
    if state is not None:
        _check_resume(state, seed, data.fingerprint, member)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        polyak.load_state_dict(state["polyak"])
        start_epoch = int(state["epoch"])
        log.info("member %d resumes after epoch %d", member, start_epoch)

    sink.begin(
        MemberInfo(
            study=spec.name,
            member=member,
            seed=seed,
            data_fingerprint=data.fingerprint,
            num_classes=info.num_classes,
            snapshot_epochs=snapshot_epochs,
            spec=spec_dict,
            labels_val=data.val.labels.numpy(),
            labels_test=data.test.labels.numpy(),
            is_primary=rank == 0,
        )
    )

    def snapshot_of(module: nn.Module, kind: str, index: int, epoch: int, resume) -> Snapshot:
        val_metrics, logits_val = evaluate(module, val_batches, precision)
        test_metrics, logits_test = evaluate(module, test_batches, precision)
        metrics = {f"val_{k}": v for k, v in val_metrics.items()}
        metrics |= {f"test_{k}": v for k, v in test_metrics.items()}
        return Snapshot(
            kind=kind,
            index=index,
            epoch=epoch,
            weights={k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
            logits_val=logits_val.numpy(),
            logits_test=logits_test.numpy(),
            metrics=metrics,
            resume_state=resume,
        )

    def polyak_snapshot(epoch: int) -> Snapshot:
        averaged = polyak.averaged_module()
        recalibrate_bn(averaged, _reset(train_batches, epoch), spec.polyak.bn_batches)
        return snapshot_of(averaged, "polyak", 0, epoch, None)

    def train_mode(module: nn.Module) -> None:
        module.train()
        if init is not None:
            # Frozen layers keep their BatchNorm statistics too, not only their weights.
            set_frozen_bn_eval(model)

    snapshots: list[dict[str, float]] = []
    polyak_metrics: dict[str, float] | None = None
    for epoch in range(start_epoch, spec.train.epochs):
        train_batches.set_epoch(epoch)
        metrics = train_one_epoch(
            net,
            train_batches,
            optimizer,
            scheduler,
            precision,
            label_smoothing=spec.train.label_smoothing,
            after_step=partial(polyak.after_step, model, epoch),
            train_mode=train_mode,
        )
        polyak.after_epoch(model, epoch)
        val_metrics, _ = evaluate(model, val_batches, precision)
        metrics |= {f"val_{k}": v for k, v in val_metrics.items()}
        if polyak.has_updates:
            averaged = polyak.averaged_module()
            recalibrate_bn(averaged, _reset(train_batches, epoch), EPOCH_BN_BATCHES)
            polyak_val, _ = evaluate(averaged, val_batches, precision)
            metrics |= {"polyak_val_acc": polyak_val["acc"], "polyak_val_nll": polyak_val["nll"]}
        done = epoch + 1
        if done in snapshot_epochs:
            if done == spec.train.epochs and polyak.has_updates:
                # Polyak weights are saved before the final snapshot: a member whose latest
                # snapshot is the last epoch is complete, nothing left to redo on resume.
                final = polyak_snapshot(done)
                sink.save_snapshot(final)
                polyak_metrics = final.metrics
            index = snapshot_epochs.index(done)
            resume = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "polyak": polyak.state_dict(),
                "epoch": done,
                "snapshot_index": index,
                "seed": seed,
                "member": member,
                "data_fingerprint": data.fingerprint,
                "spec": spec_dict,
            }
            snap = snapshot_of(model, "snapshot", index, done, resume)
            sink.save_snapshot(snap)
            snapshots.append({"index": index, "epoch": done, **snap.metrics})
            metrics |= {"snapshot": index, "snapshot_test_acc": snap.metrics["test_acc"]}
            if polyak_metrics is not None:
                metrics |= {"polyak_test_acc": polyak_metrics["test_acc"]}
        sink.log_epoch(done, metrics)

    summary = {
        "member": member,
        "seed": seed,
        "epochs": spec.train.epochs,
        "resumed_from_epoch": start_epoch,
        "snapshots": snapshots,
        "polyak": polyak_metrics,
    }
    sink.end(summary)
    return MemberResult(
        member=member,
        seed=seed,
        epochs_trained=spec.train.epochs - start_epoch,
        resumed_from_epoch=start_epoch,
        snapshots=snapshots,
        polyak=polyak_metrics,
    )


def _reset(batches: BatchLoader, epoch: int) -> BatchLoader:
    # Recalibration sees the same training distribution (augmented) the weights were trained on.
    batches.set_epoch(epoch)
    return batches


def _check_resume(state: dict[str, Any], seed: int, fingerprint: str, member: int) -> None:
    problems = []
    if int(state.get("seed", seed)) != seed:
        problems.append(f"seed {state.get('seed')} != {seed}")
    if state.get("data_fingerprint", fingerprint) != fingerprint:
        problems.append("the data split differs")
    if problems:
        raise ResumeMismatchError(
            f"member {member}: the stored snapshot cannot be resumed ({'; '.join(problems)}); "
            "use a fresh output directory"
        )
