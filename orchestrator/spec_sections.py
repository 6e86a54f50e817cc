"""The study spec's sections: one validated pydantic model per concern (data, model, ...).

`orchestrator.config` assembles them into `StudySpec` and re-exports them; import from there.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.models.resnet import resolve_block, valid_depths_message

DatasetName = Literal["fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"]
ModelName = Literal[
    "resnet",
    "plain",
    "tiny",
    "resnet18",
    "resnet50",
    "resnet101",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x1_0",
]
DATASETS = get_args(DatasetName)
MODEL_NAMES = get_args(ModelName)
CIFAR_FAMILIES = ("resnet", "plain")


class _Section(BaseModel):
    # Unknown keys are errors: a typo in a study file must never be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Section):
    name: DatasetName = "fashion-mnist"
    dir: str | None = Field(None, description="where the data lives or is downloaded to")
    subset: int | None = Field(None, gt=0, description="training images to use (quick runs)")
    eval_subset: int | None = Field(None, gt=0, description="validation and test images each")
    subset_per_member: bool = Field(
        False,
        description="each member draws its own `subset` from the training pool (bagging); "
        "validation and test stay shared",
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = Field(
        0, ge=0, description="seed of the train/val split shared by all members"
    )
    augment: bool = True
    download: bool = True
    image_size: int | None = Field(None, gt=0, description="imagefolder/synthetic image side")
    num_classes: int | None = Field(None, gt=1, description="synthetic only")
    channels: int | None = Field(None, gt=0, description="synthetic only")
    synthetic_size: int = Field(2048, gt=0, description="synthetic training images")
    classes: list[int] | None = Field(
        None, description="keep only these class indices, relabelled 0..k-1 (transfer studies)"
    )


class InitSpec(_Section):
    """Transfer learning: where the initial weights come from and what is trained.

    Exactly one of `source` (a file, snapshot dir or torchvision weights) and `study` (the
    members of an earlier study: each member starts from a finished member of that study with
    the same architecture, member k from the k-th such member, cycling). `enabled: false` trains
    from scratch, so one study can search `model.init.enabled: [true, false]` for both arms.
    """

    source: str | None = Field(
        None, description="checkpoint file, snapshot dir, or 'torchvision:<Weights>.<NAME>'"
    )
    study: str | None = Field(
        None, description="an earlier study to start from: its output dir or tracking URI"
    )
    study_name: str | None = Field(
        None, description="with `study`: the study's name in that store (default: its only one)"
    )
    weights: Literal["final", "polyak"] = Field(
        "final", description="with `study`: the source member's final snapshot or Polyak weights"
    )
    origin: str | None = Field(
        None, description="set by the orchestrator: the study member `study` resolved to"
    )
    enabled: bool = Field(True, description="false: train from scratch (the baseline arm)")
    reset_head: bool = Field(
        False, description="re-initialise the classifier even when its shape fits the source"
    )
    train: Literal["finetune", "linear_probe", "freeze_stages"] = "finetune"
    freeze_stages: int = Field(
        0, ge=0, description="with train=freeze_stages: stem + first K stages"
    )

    @model_validator(mode="after")
    def _one_source(self) -> InitSpec:
        if (self.source is None) == (self.study is None):
            raise ValueError(
                "model.init needs exactly one of source (a checkpoint file, snapshot dir or "
                "torchvision:<Weights>.<NAME>) and study (an earlier study's output dir or "
                f"tracking URI); got source={self.source!r}, study={self.study!r}"
            )
        if self.study_name is not None and self.study is None:
            raise ValueError("model.init.study_name is only used with model.init.study")
        return self


class ModelSpec(_Section):
    name: ModelName = "resnet"
    depth: int = Field(20, gt=0, description="CIFAR-style families only (resnet, plain)")
    block: Literal["auto", "basic", "bottleneck"] = "auto"
    width: float = Field(1.0, gt=0.0, description="channel width multiplier")
    init: InitSpec | None = None

    @property
    def transfer(self) -> InitSpec | None:
        """The init to apply: `init` unless it is unset or disabled (the from-scratch arm)."""
        return self.init if self.init is not None and self.init.enabled else None

    @model_validator(mode="after")
    def _depth_fits_block(self) -> ModelSpec:
        if self.name in CIFAR_FAMILIES and resolve_block(self.depth, self.block) is None:
            raise ValueError(
                f"model.depth={self.depth} is not valid for {self.name} with block={self.block}: "
                + valid_depths_message(self.block)
            )
        return self


class TrainSpec(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(256, ge=1, description="256 is faster than larger batches on CPU")
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all given)")


class ScheduleSpec(_Section):
    kind: Literal["step", "cosine", "cyclic"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], description="step: fractions of the main phase"
    )
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: LR factor at each milestone")
    cycles: int = Field(1, ge=1, description="cyclic: snapshots = cycles")
    restart_lr: float | None = Field(None, gt=0.0, description="cyclic: LR at each restart")
    min_lr: float = Field(0.0, ge=0.0)
    snapshot_every: int | None = Field(
        None, ge=1, description="step/cosine: snapshot every N epochs (default: last epoch only)"
    )
    swa_epochs: int = Field(0, ge=0, description="constant-LR tail after the main phase (SWA)")
    swa_lr: float | None = Field(None, gt=0.0, description="LR of the constant tail")

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < m < 1.0 for m in value) or value != sorted(value):
            raise ValueError("schedule.milestones must be increasing fractions in (0, 1)")
        return value


class PolyakSpec(_Section):
    kind: Literal["ema", "swa", "none"] = "ema"
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="ema: weight of the running average")
    start_epoch: int = Field(0, ge=0, description="first epoch (0-based) that is averaged")
    bn_batches: int | None = Field(
        None, ge=1, description="BatchNorm recalibration batches (default: one training pass)"
    )


class MembersSpec(_Section):
    count: int | None = Field(None, ge=1)
    seeds: list[int] | None = None

    @model_validator(mode="after")
    def _count_or_seeds(self) -> MembersSpec:
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("members.seeds must not be empty")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("members.seeds must be distinct")
            if self.count is not None and self.count != len(self.seeds):
                raise ValueError(
                    f"members.count={self.count} disagrees with {len(self.seeds)} members.seeds; "
                    "give one of them"
                )
        return self

    def resolved_seeds(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return list(range(self.count or 1))


class RangeSpec(_Section):
    """A continuous or integer range for random/Optuna search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"range low={self.low} must be below high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SchedulerSpec(_Section):
    kind: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs before ASHA may stop a trial")
    reduction_factor: int = Field(3, ge=2)


class SearchSpec(_Section):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    space: dict[str, list[Any] | RangeSpec] = Field(
        default_factory=dict, description="dotted spec field -> values (grid) or range"
    )
    num_samples: int = Field(1, ge=1, description="random/optuna: configurations to sample")
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)

    @model_validator(mode="after")
    def _space_fits_algorithm(self) -> SearchSpec:
        for key, values in self.space.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"search.space.{key} has no values")
            if isinstance(values, RangeSpec) and self.algorithm == "grid":
                raise ValueError(
                    f"search.space.{key} is a range; ranges need search.algorithm random or optuna"
                )
        return self


class ResourcesSpec(_Section):
    workers_per_member: int = Field(1, ge=1, description="DDP workers inside one member")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0, description="fractions share one GPU")
    max_concurrent_members: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="worker restarts from the latest snapshot")

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("resources.gpus_per_worker above 1 must be a whole number")
        return value


class TrackingSpec(_Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI (default: SQLite in the output dir)"
    )
    experiment: str | None = Field(None, description="default: the study name")
    log_models: bool = Field(True, description="log each snapshot as an MLflow LoggedModel")


class StorageSpec(_Section):
    path: str | None = Field(
        None, description="Ray storage (local dir or s3://); default: output dir"
    )
