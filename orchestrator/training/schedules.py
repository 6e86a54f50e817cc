"""Learning-rate schedules as pure functions of the optimizer step.

A schedule is `lr(step)` in absolute terms, driven through `torch.optim.lr_scheduler.LambdaLR`
(factor = lr(step) / base_lr). Being a pure function of the step makes resume exact: the
restored scheduler only needs its step count.

Phases over `train.epochs` epochs of `steps_per_epoch` steps:
    warmup (linear from min_lr to lr) | main phase | SWA tail (constant swa_lr)

Main phase kinds:
- step:    lr * gamma ** (number of milestones passed), milestones as fractions of the phase.
- cosine:  min_lr + (lr - min_lr) / 2 * (1 + cos(pi * t / T)).
- cyclic:  snapshot ensembles (Huang et al. 2017): M cycles of cosine annealing with warm
           restarts, each cycle restarting at restart_lr (default lr):
           alpha(t) = min_lr + (restart_lr - min_lr) / 2 * (cos(pi * (t mod T/M) / (T/M)) + 1)
           One snapshot at each cycle's end, where the LR is lowest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from orchestrator.config import StudySpec


@dataclass(frozen=True)
class SchedulePlan:
    """The schedule of one member: LR per step and the epochs that end with a snapshot."""

    base_lr: float
    steps_per_epoch: int
    epochs: int
    warmup_epochs: int
    main_epochs: int
    swa_epochs: int
    kind: str
    cycles: int
    restart_lr: float
    min_lr: float
    milestones: tuple[float, ...]
    gamma: float
    swa_lr: float
    snapshot_every: int | None

    @classmethod
    def from_spec(cls, spec: StudySpec, steps_per_epoch: int) -> SchedulePlan:
        s, t = spec.schedule, spec.train
        return cls(
            base_lr=t.lr,
            steps_per_epoch=max(1, steps_per_epoch),
            epochs=t.epochs,
            warmup_epochs=s.warmup_epochs,
            main_epochs=t.epochs - s.warmup_epochs - s.swa_epochs,
            swa_epochs=s.swa_epochs,
            kind=s.kind,
            cycles=s.cycles if s.kind == "cyclic" else 1,
            restart_lr=s.restart_lr if s.restart_lr is not None else t.lr,
            min_lr=s.min_lr,
            milestones=tuple(s.milestones),
            gamma=s.gamma,
            swa_lr=s.swa_lr if s.swa_lr is not None else t.lr,
            snapshot_every=s.snapshot_every,
        )

    # LR -------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        spe = self.steps_per_epoch
        warm, main = self.warmup_epochs * spe, self.main_epochs * spe
        if step < warm:
            return self.min_lr + (self.base_lr - self.min_lr) * (step + 1) / warm
        t = step - warm
        if t >= main:
            return self.swa_lr
        if self.kind == "step":
            passed = sum(t >= m * main for m in self.milestones)
            return self.base_lr * self.gamma**passed
        if self.kind == "cosine":
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (
                1 + math.cos(math.pi * t / main)
            )
        cycle_len = main // self.cycles
        pos = t % cycle_len
        # pos = cycle_len - 1 is the last step of a cycle: lr is near min_lr there.
        cosine = 0.5 * (1 + math.cos(math.pi * pos / cycle_len))
        return self.min_lr + (self.restart_lr - self.min_lr) * cosine

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        for group in optimizer.param_groups:
            group["lr"] = self.base_lr
            group.setdefault("initial_lr", self.base_lr)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr(step) / self.base_lr
        )

    # Snapshots ------------------------------------------------------------------------
    def snapshot_epochs(self) -> list[int]:
        """1-based epochs after which a snapshot is taken; the last epoch is always one."""
        end_main = self.warmup_epochs + self.main_epochs
        if self.kind == "cyclic":
            per_cycle = self.main_epochs // self.cycles
            epochs = [self.warmup_epochs + per_cycle * (k + 1) for k in range(self.cycles)]
        elif self.snapshot_every:
            epochs = list(range(self.snapshot_every, end_main + 1, self.snapshot_every))
        else:
            epochs = [end_main]
        if self.swa_epochs:
            epochs.append(self.epochs)
        return sorted(set(epochs) | {self.epochs})
