"""`train_one_epoch` and `evaluate`: plain functions that return metrics.

Shaped like torchvision's references/classification: no framework, so the same loop runs in a
unit test, in `ensemble train-member`, and inside a Ray Train worker (where the model may be
wrapped in DistributedDataParallel and the loader sharded by rank).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Precision:
    """Autocast settings: bf16 autocast on CUDA, plain fp32 on CPU (bf16 on CPU is slower)."""

    device_type: str
    dtype: torch.dtype | None  # None: no autocast

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    *,
    label_smoothing: float = 0.0,
    after_step: Callable[[], None] | None = None,
    train_mode: Callable[[nn.Module], None] | None = None,
) -> dict[str, float]:
    """One pass over `batches` (x: (B, C, H, W) float, y: (B,) int64). Returns train metrics.

    The LR scheduler steps per batch (schedules are defined per step). Loss and accuracy are
    accumulated on-device and read once at the end: a `.item()` per batch would synchronise
    CUDA every step. `train_mode` replaces `model.train()`, e.g. to keep frozen BatchNorm
    layers in eval mode during transfer learning.
    """
    (train_mode or nn.Module.train)(model)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    lr_first = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for x, y in batches:
        with precision.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        loss_sum = loss_sum.to(loss.device) + loss.detach().double() * y.numel()
        correct = correct.to(y.device) + (logits.detach().argmax(1) == y).sum()
        seen += y.numel()
    elapsed = time.perf_counter() - start
    if seen == 0:
        raise ValueError("train_one_epoch got no batches: the training split is empty")
    return {
        "train_loss": float(loss_sum) / seen,
        "train_acc": float(correct) / seen,
        "lr": lr_first,
        "train_images_per_s": seen / max(elapsed, 1e-9),
    }


@torch.no_grad()
def predict_logits(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: Precision
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) as float32 on CPU and labels (N,), in loader order."""
    model.eval()
    all_logits, all_labels = [], []
    for x, y in batches:
        with precision.autocast():
            logits = model(x)
        all_logits.append(logits.float().cpu())
        all_labels.append(y.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)


def logits_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and NLL of logits (N, classes) against labels (N,)."""
    return {
        "acc": float((logits.argmax(1) == labels).double().mean()),
        "nll": float(F.cross_entropy(logits.double(), labels)),
    }


def evaluate(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: Precision
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and logits of `model` on `batches`."""
    logits, labels = predict_logits(model, batches, precision)
    return logits_metrics(logits, labels), logits
