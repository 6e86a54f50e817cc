"""Transfer from an earlier study: `model.init.study` -> the checkpoint of one of its members.

Each member of the new study starts from a finished member of the source study with the same
architecture (model name, depth, block, width): member k from the k-th such member, cycling, so
an ensemble fine-tuned from an ensemble keeps its members' diversity. The source is found through
its MLflow store, the same way `ensemble aggregate` reads a study, so it works for a local study
dir and for a team server with S3 artifacts alike.

- `resolve_init_studies(spec, trials)` runs at launch, before any cluster work: it makes a
  relative study dir absolute (workers do not share the launcher's cwd) and checks that every
  trial finds a source member, naming the architectures the source has when one does not.
- `materialize_init(spec, member)` runs where the member trains: it fetches the checkpoint (read
  in place from a local store) and returns the spec with `model.init.source` set to that file,
  `study` cleared and `origin` recording which member, run and snapshot it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import InitSpec, ModelSpec, StudySpec, with_values
from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.tracking.errors import TrackingError
from orchestrator.tracking.reader import (
    StudyRun,
    find_study,
    list_studies,
    load_members,
    resolve_store,
)

ARCHITECTURE_FIELDS = ("name", "depth", "block", "width")


class InitSourceError(ValueError):
    """`model.init.study` names no usable source (no store, no study, no matching member)."""


@dataclass(frozen=True)
class SourceStudy:
    run: StudyRun
    members: list[MemberRecord]


@dataclass(frozen=True)
class SourceChoice:
    study: StudyRun
    member: MemberRecord
    ref: SnapshotRef

    @property
    def origin(self) -> str:
        what = "polyak" if self.ref.kind == "polyak" else f"snapshot {self.ref.index}"
        return (
            f"study {self.study.study} ({self.study.run}) member {self.member.key}, {what} "
            f"(epoch {self.ref.epoch}): {self.ref.location}"
        )


def architecture(model: dict[str, Any] | ModelSpec) -> tuple:
    data = model.model_dump() if isinstance(model, ModelSpec) else model
    defaults = ModelSpec().model_dump()
    return tuple(data.get(f, defaults[f]) for f in ARCHITECTURE_FIELDS)


def _describe(arch: tuple) -> str:
    return ", ".join(f"{f}={v}" for f, v in zip(ARCHITECTURE_FIELDS, arch, strict=True))


def load_source_study(init: InitSpec) -> SourceStudy:
    """The finished members of the study `init.study` (+ `study_name`) names."""
    try:
        uri = resolve_store(init.study)
        name = init.study_name
        if name is None:
            names = sorted({s.study for s in list_studies(uri)})
            if len(names) != 1:
                raise InitSourceError(
                    f"model.init.study={init.study!r} holds {len(names)} studies "
                    f"({', '.join(names) or 'none'}); set model.init.study_name to one of them"
                )
            name = names[0]
        run = find_study(uri, name)
        # Remote checkpoints land in the reader's cache by run id: members sharing a source
        # share one download.
        members = load_members(uri, run.run_id)
    except TrackingError as exc:
        raise InitSourceError(f"model.init.study={init.study!r}: {exc}") from None
    if not members:
        raise InitSourceError(
            f"model.init.study={init.study!r}: study {run.study} ({run.run}) has no finished "
            "members yet; run it to completion first"
        )
    return SourceStudy(run, members)


def choose_source(source: SourceStudy, init: InitSpec, model: ModelSpec, member: int):
    """The source member (and its snapshot) that member `member` of `model` starts from."""
    want = architecture(model)
    matching = [m for m in source.members if architecture(m.spec.get("model") or {}) == want]
    if not matching:
        have = sorted({_describe(architecture(m.spec.get("model") or {})) for m in source.members})
        raise InitSourceError(
            f"model.init.study={init.study!r}: no member of study {source.run.study} has this "
            f"member's architecture ({_describe(want)}); the study has: {'; '.join(have)}"
        )
    chosen = matching[member % len(matching)]
    if init.weights == "polyak":
        if chosen.polyak is None:
            raise InitSourceError(
                f"model.init.weights='polyak' but member {chosen.key} of study "
                f"{source.run.study} has no Polyak weights (its polyak.kind was none); "
                "allowed: final, or a study trained with polyak.kind ema|swa"
            )
        ref = chosen.polyak
    else:
        ref = chosen.snapshots[-1]
    return SourceChoice(source.run, chosen, ref)


def resolve_init_studies(spec: StudySpec, trials) -> StudySpec:
    """`spec` with model.init.study as an absolute store URI, after checking that every trial
    (a searched configuration and member) finds its source member. Raises InitSourceError."""
    init = spec.model.init
    if init is None or init.study is None:
        return spec
    try:
        uri = resolve_store(init.study)
    except TrackingError as exc:
        raise InitSourceError(f"model.init.study={init.study!r}: {exc}") from None
    spec = with_values(spec, {"model.init.study": uri})
    sources: dict[tuple, SourceStudy] = {}
    for trial in trials:
        trial_spec = with_values(spec, trial.values)
        trial_init = trial_spec.model.transfer
        if trial_init is None or trial_init.study is None:
            continue
        key = (trial_init.study, trial_init.study_name)
        if key not in sources:
            sources[key] = load_source_study(trial_init)
        choose_source(sources[key], trial_init, trial_spec.model, trial.member)
    return spec


def materialize_init(spec: StudySpec, member: int) -> StudySpec:
    """`spec` with its study init replaced by the chosen member's checkpoint file (local)."""
    init = spec.model.transfer
    if init is None or init.study is None:
        return spec
    choice = choose_source(load_source_study(init), init, spec.model, member)
    weights_file = choice.ref.fetch_weights()
    return with_values(
        spec,
        {
            "model.init.source": str(weights_file),
            "model.init.study": None,
            "model.init.study_name": None,
            "model.init.origin": choice.origin,
        },
    )
