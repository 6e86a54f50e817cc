"""Polyak averaging of the parameter vector, and BatchNorm recalibration.

Both averages are `torch.optim.swa_utils.AveragedModel`s over *parameters only*
(`use_buffers=False`): BatchNorm running statistics of an average of weights are not the
average of the running statistics, so they are recomputed by `recalibrate_bn` on training
data before the averaged weights are evaluated (Izmailov et al. 2018).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from orchestrator.config import PolyakSpec


class ExponentialMovingAverage(AveragedModel):
    """EMA of the weights, updated after every optimizer step (torchvision references style).

        ema_t = decay * ema_{t-1} + (1 - decay) * theta_t

    The first update copies theta (AveragedModel's n_averaged == 0 branch), so early EMA
    weights are not biased towards the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, device: torch.device | None = None):
        super().__init__(
            model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False
        )


class StochasticWeightAverage(AveragedModel):
    """Equal running average of the weights (SWA), updated once per epoch from a start epoch.

    swa_n = swa_{n-1} + (theta_n - swa_{n-1}) / n
    """

    def __init__(self, model: nn.Module, device: torch.device | None = None):
        super().__init__(model, device=device, use_buffers=False)


class Polyak:
    """When and how a member's weights are averaged, per `PolyakSpec`."""

    def __init__(self, model: nn.Module, spec: PolyakSpec):
        self.spec = spec
        self.average: AveragedModel | None = None
        if spec.kind == "ema":
            self.average = ExponentialMovingAverage(model, spec.decay)
        elif spec.kind == "swa":
            self.average = StochasticWeightAverage(model)

    @property
    def enabled(self) -> bool:
        return self.average is not None

    def after_step(self, model: nn.Module, epoch: int) -> None:
        if self.spec.kind == "ema" and epoch >= self.spec.start_epoch:
            self.average.update_parameters(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if self.spec.kind == "swa" and epoch >= self.spec.start_epoch:
            self.average.update_parameters(model)

    @property
    def has_updates(self) -> bool:
        return self.enabled and int(self.average.n_averaged) > 0

    def state_dict(self) -> dict | None:
        return self.average.state_dict() if self.average is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.average is not None and state is not None:
            self.average.load_state_dict(state)

    def averaged_module(self) -> nn.Module:
        """The averaged network itself (unwrapped), sharing storage with the average."""
        return self.average.module


def recalibrate_bn(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> bool:
    """Recompute BatchNorm running statistics with a pass over training batches.

    Uses `torch.optim.swa_utils.update_bn` (cumulative averages over the pass). Returns False
    when the model has no BatchNorm (nothing to do). `batches` yields (x, y) already on the
    model's device; only x is used.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False

    update_bn((x for x, _ in islice(batches, max_batches)), model)
    return True
