"""The study spec: one validated object per concern, resolved once.

Resolution order (timm `args.yaml`, nanoGPT `GPTConfig`): field defaults -> the study YAML ->
dotted CLI overrides (`--set model.depth=56`). The resolved spec is what every member sees and
what is saved beside the outputs (`dump_yaml`). Unknown keys and bad values fail here, before any
cluster work, with a message that names the field and the allowed values (`SpecError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class SpecError(ValueError):
    """A study spec that cannot run; the message names each bad field and what it allows."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo in a study file must never be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Section):
    name: DatasetName = "fashion-mnist"
    dir: str | None = Field(None, description="where the data lives or is downloaded to")
    subset: int | None = Field(None, gt=0, description="training images to use (quick runs)")
    eval_subset: int | None = Field(None, gt=0, description="validation and test images each")
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
    """Transfer learning: where the initial weights come from and what is trained."""

    source: str = Field(
        description="checkpoint file, snapshot dir, or 'torchvision:<Weights>.<NAME>'"
    )
    train: Literal["finetune", "linear_probe", "freeze_stages"] = "finetune"
    freeze_stages: int = Field(
        0, ge=0, description="with train=freeze_stages: stem + first K stages"
    )


class ModelSpec(_Section):
    name: ModelName = "resnet"
    depth: int = Field(20, gt=0, description="CIFAR-style families only (resnet, plain)")
    block: Literal["auto", "basic", "bottleneck"] = "auto"
    width: float = Field(1.0, gt=0.0, description="channel width multiplier")
    init: InitSpec | None = None

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


class StudySpec(_Section):
    name: str = "study"
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    polyak: PolyakSpec = Field(default_factory=PolyakSpec)
    members: MembersSpec = Field(default_factory=MembersSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes a directory, an MLflow experiment and run names.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", value):
            raise ValueError("name must be 1-100 characters of letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _schedule_fits_training(self) -> StudySpec:
        sched, epochs = self.schedule, self.train.epochs
        main = epochs - sched.warmup_epochs - sched.swa_epochs
        if main < 1:
            raise ValueError(
                f"train.epochs={epochs} leaves no main phase after schedule.warmup_epochs="
                f"{sched.warmup_epochs} and schedule.swa_epochs={sched.swa_epochs}"
            )
        if sched.kind == "cyclic" and main % sched.cycles:
            raise ValueError(
                f"schedule.cycles={sched.cycles} must divide the main phase of {main} epochs "
                "(train.epochs - warmup_epochs - swa_epochs) so each cycle ends on an epoch"
            )
        if sched.swa_epochs and sched.swa_lr is None:
            raise ValueError("schedule.swa_epochs needs schedule.swa_lr")
        if self.polyak.kind != "none" and self.polyak.start_epoch >= epochs:
            raise ValueError(
                f"polyak.start_epoch={self.polyak.start_epoch} must be below train.epochs={epochs}"
            )
        for key in self.search.space:
            check_field_path(key, prefix="search.space")
        return self

    # Convenience views ------------------------------------------------------------------
    def seeds(self) -> list[int]:
        return self.members.resolved_seeds()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def flat(self) -> dict[str, Any]:
        """Dotted `section.field` -> value, as MLflow params and search keys use them."""
        return flatten(self.to_dict())


# Dotted paths ---------------------------------------------------------------------------
SEARCH_SECTIONS = ("data", "model", "train", "schedule", "polyak")


def check_field_path(path: str, prefix: str = "field") -> None:
    """Raise ValueError unless `path` names a leaf field that a search may vary."""
    parts = path.split(".")
    if parts[0] not in SEARCH_SECTIONS:
        raise ValueError(
            f"{prefix}.{path}: unknown search dimension; it must start with one of "
            f"{', '.join(SEARCH_SECTIONS)}"
        )
    model: type[BaseModel] = StudySpec
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            raise ValueError(
                f"{prefix}.{path}: unknown search dimension; '{'.'.join(parts[: i + 1])}' is not a "
                f"field (allowed: {', '.join(sorted(fields))})"
            )
        annotation = fields[part].annotation
        nested = _section_type(annotation)
        if nested is None:
            if i != len(parts) - 1:
                raise ValueError(f"{prefix}.{path}: '{part}' has no sub-fields")
            return
        model = nested
    raise ValueError(f"{prefix}.{path}: names a whole section; name one of its fields")


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", (annotation,))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "space":
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    node = tree
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {path}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`model.depth=56` -> ("model.depth", 56); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected KEY=VALUE, e.g. model.depth=56")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_.\-]+)*", key):
        raise SpecError(f"--set {text!r}: '{key}' is not a dotted field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
    return key, value


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict:
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        if key.startswith("search.space."):
            # search.space keys themselves contain dots: 'search.space.model.depth=[20, 32]'.
            tree.setdefault("search", {}).setdefault("space", {})[key[len("search.space.") :]] = (
                value
            )
        else:
            set_dotted(tree, key, value)
    return tree


# Loading --------------------------------------------------------------------------------
def from_dict(tree: Mapping[str, Any], source: str = "study") -> StudySpec:
    try:
        return StudySpec.model_validate(dict(tree))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def load(path: str | Path | None = None, overrides: Iterable[str] = ()) -> StudySpec:
    """Defaults -> YAML file -> dotted overrides, validated once."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise SpecError(f"study file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise SpecError(f"{path}: a study file must be a mapping of sections")
        tree = loaded
        tree.setdefault("name", path.stem)
    return from_dict(apply_overrides(tree, overrides), source)


def dump_yaml(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def with_values(spec: StudySpec, values: Mapping[str, Any]) -> StudySpec:
    """A copy of `spec` with dotted values set (a Tune trial's searched config)."""
    return from_dict(apply_overrides(spec.to_dict(), list(values.items())), "search")


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid study spec ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key; allowed: {', '.join(_allowed_keys(err['loc'][:-1]))}"
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            message = f"got {err.get('input')!r}; allowed values: {allowed}"
        elif "input" in err and not isinstance(err["input"], dict) and err["type"] != "value_error":
            message = f"got {err['input']!r}: {message}"
        lines.append(f"  - {loc or '<root>'}: {message}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = StudySpec
    for part in loc:
        field = model.model_fields.get(str(part))
        nested = _section_type(field.annotation) if field else None
        if nested is None:
            break
        model = nested
    return sorted(model.model_fields)


# Smoke mode -------------------------------------------------------------------------------
SMOKE_TRAIN_IMAGES = 512
SMOKE_EVAL_IMAGES = 256


def smoke(spec: StudySpec) -> StudySpec:
    """A quick check of any study: tiny subset, 2 members, 2 snapshots each, 1 epoch per cycle.

    Search dimensions keep only their first value (or a single sample), so the study still
    exercises every code path (Tune, Train, snapshots, Polyak, tracking) in a few minutes.
    """
    tree = spec.to_dict()
    tree["name"] = spec.name if spec.name.endswith("-smoke") else f"{spec.name}-smoke"
    data = tree["data"]
    data["subset"] = min(data.get("subset") or SMOKE_TRAIN_IMAGES, SMOKE_TRAIN_IMAGES)
    data["eval_subset"] = min(data.get("eval_subset") or SMOKE_EVAL_IMAGES, SMOKE_EVAL_IMAGES)
    data["synthetic_size"] = min(data["synthetic_size"], SMOKE_TRAIN_IMAGES)
    tree["train"].update(epochs=2, batch_size=min(tree["train"]["batch_size"], 64))
    tree["schedule"].update(
        kind="cyclic", cycles=2, warmup_epochs=0, swa_epochs=0, snapshot_every=None
    )
    if tree["polyak"]["kind"] != "none":
        tree["polyak"]["start_epoch"] = 0
    seeds = spec.seeds()[:2] if len(spec.seeds()) >= 2 else [spec.seeds()[0], spec.seeds()[0] + 1]
    tree["members"] = {"count": None, "seeds": seeds}
    search = tree["search"]
    search["space"] = {
        key: values[:1] if isinstance(values, list) else values
        for key, values in search["space"].items()
    }
    search["num_samples"] = 1
    search["scheduler"]["kind"] = "none"
    return from_dict(tree, f"{spec.name} --smoke")
