"""The study spec: one validated object per concern, resolved once.

Resolution order (timm `args.yaml`, nanoGPT `GPTConfig`): field defaults -> the study YAML ->
dotted CLI overrides (`--set model.depth=56`). The resolved spec is what every member sees and
what is saved beside the outputs (`dump_yaml`). Unknown keys and bad values fail here, before any
cluster work, with a message that names the field and the allowed values (`SpecError`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from orchestrator.overrides import (  # noqa: F401 - re-exported: config is the spec's API
    SpecError,
    apply_overrides,
    flatten,
    parse_override,
    set_dotted,
)
from orchestrator.spec_sections import (  # noqa: F401 - re-exported: config is the spec's API
    CIFAR_FAMILIES,
    DATASETS,
    MODEL_NAMES,
    DatasetName,
    DataSpec,
    InitSpec,
    MembersSpec,
    ModelName,
    ModelSpec,
    PolyakSpec,
    RangeSpec,
    ResourcesSpec,
    SchedulerSpec,
    ScheduleSpec,
    SearchSpec,
    StorageSpec,
    TrackingSpec,
    TrainSpec,
    _Section,
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
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named sets of dotted overrides, e.g. full: {train.epochs: 200} (--profile)",
    )

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


# Loading --------------------------------------------------------------------------------
def from_dict(tree: Mapping[str, Any], source: str = "study") -> StudySpec:
    try:
        return StudySpec.model_validate(dict(tree))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def load(
    path: str | Path | None = None, overrides: Iterable[str] = (), profile: str | None = None
) -> StudySpec:
    """Defaults -> YAML file -> the named profile's overrides -> CLI overrides, validated once.

    A study file's `profiles` (e.g. `full:` for the GPU-cluster size of a laptop-sized study)
    are each checked here too, so a broken profile fails whichever profile is run.
    """
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
    profiles = tree.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise SpecError(f"{source}: profiles must map a profile name to dotted overrides")
    for name, values in profiles.items():
        if not isinstance(values, dict):
            raise SpecError(f"{source}: profiles.{name} must map dotted fields to values")
        from_dict(
            apply_overrides(copy.deepcopy(tree), list(values.items())), f"{source} profile {name}"
        )
    if profile is not None:
        if profile not in profiles:
            raise SpecError(
                f"--profile {profile!r} is not in {source}; profiles: {', '.join(profiles) or 'none'}"
            )
        tree = apply_overrides(tree, list(profiles[profile].items()))
    # The resolved spec is what runs: profiles were checked and (one) applied above. Keeping
    # them would re-check e.g. `members.count: 8` against a --smoke spec's two seeds.
    tree["profiles"] = {}
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
