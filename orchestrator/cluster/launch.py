"""`run_study`: a study file becomes Tune trials, each a Ray Train member.

Data flow (DESIGN.md): spec -> trials (search configurations x seeds, validated) -> connect
to Ray -> check resources -> skip finished members -> Tune runs `member_driver` per trial ->
summary. Everything that can be wrong with the input fails before the first trial starts.

Output dir (default runs/<study>/):
    study.yaml          the resolved spec
    study.json          the study's runs (run-001, run-002 with --fresh) and which is current
    ray/<run>/members/<trial key>/snapshot_<k>/   Ray Train checkpoints = snapshots
    ray/<run>/tune-<n>/ Tune's experiment state of each invocation
    mlflow.db, mlartifacts/  the embedded MLflow store, unless tracking.uri names a server

Tracking: `tracking_factory(spec, paths, trials, nodes=N)` (tracking.study.start_study) runs
after the cluster is known and before any trial: it fails the study early (unreachable
server, SQLite on a multi-node cluster) and returns the ids every trial gets as
config["tracking"]. The study run is closed by tracking.study.finish_study at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import config as config_mod
from orchestrator.cluster.storage import is_remote, join
from orchestrator.cluster.trials import Trial, expand_trials
from orchestrator.config import StudySpec
from orchestrator.tracking.errors import TrackingError

STATE_FILE = "study.json"


class StudyInputError(RuntimeError):
    """The study cannot start: bad search space, unreachable cluster, resources that don't fit."""


@dataclass
class StudyPaths:
    output: Path
    run: str
    run_storage: str  # local path or URI
    members_storage: str
    tune_name: str

    @property
    def label(self) -> str:
        return f"{self.output} ({self.run})"


@dataclass
class MemberOutcome:
    trial: Trial
    status: str  # done | skipped (finished earlier) | failed | stopped
    summary: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class StudyOutcome:
    spec: StudySpec
    paths: StudyPaths
    members: list[MemberOutcome] = field(default_factory=list)
    tracking: dict[str, Any] | None = None  # what trials got as config["tracking"]

    @property
    def ok(self) -> bool:
        # ASHA stops weak trials on purpose; otherwise a stopped member was interrupted.
        allowed = {"done", "done earlier"}
        if self.spec.search.scheduler.kind == "asha":
            allowed.add("stopped")
        return all(m.status in allowed for m in self.members)


def default_output(spec: StudySpec) -> Path:
    return Path("runs") / spec.name


def resolve_paths(spec: StudySpec, output: Path, fresh: bool) -> StudyPaths:
    """Pick the run (the current one, or a new one with --fresh) without touching old runs."""
    output = output.resolve()
    state_file = output / STATE_FILE
    state = (
        json.loads(state_file.read_text())
        if state_file.is_file()
        else {"runs": [], "invocations": {}}
    )
    if fresh or not state["runs"]:
        run = f"run-{len(state['runs']) + 1:03d}"
        state["runs"].append(run)
    else:
        run = state["runs"][-1]
    invocation = state["invocations"].get(run, 0) + 1
    state["invocations"][run] = invocation
    state["current"] = run
    storage_root = spec.storage.path or str(output / "ray")
    run_storage = (
        join(storage_root, spec.name, run) if is_remote(storage_root) else join(storage_root, run)
    )
    output.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2))
    return StudyPaths(
        output=output,
        run=run,
        run_storage=run_storage,
        members_storage=join(run_storage, "members"),
        tune_name=f"tune-{invocation:03d}",
    )


def run_study(
    spec: StudySpec,
    *,
    output: Path | None = None,
    address: str | None = None,
    fresh: bool = False,
    console: Console | None = None,
    tracking_factory=None,
) -> StudyOutcome:
    console = console or Console()
    import ray

    from orchestrator.cluster.driver import read_complete
    from orchestrator.cluster.resources import ClusterShape, ResourceError, plan_members
    from orchestrator.cluster.session import ClusterUnreachableError, connect
    from orchestrator.tracking.init_source import resolve_init_studies

    try:
        # 1. Input: every trial is a valid spec before anything starts, and finds its
        # transfer source when it starts from an earlier study's members.
        trials = expand_trials(spec)
        spec = resolve_init_studies(spec, trials)
        # 2. Cluster: reachable, and big enough for one member.
        where = connect(address)
        plan = plan_members(spec.resources, ClusterShape.from_nodes(ray.nodes()), len(trials))
    # ValueError covers SpecError and the transfer-source InitSourceError.
    except (ValueError, ClusterUnreachableError, ResourceError) as exc:
        raise StudyInputError(str(exc)) from None

    paths = resolve_paths(spec, output or default_output(spec), fresh)
    (paths.output / "study.yaml").write_text(config_mod.dump_yaml(spec))
    outcome = StudyOutcome(spec, paths)

    # 3. Finished members are never retrained; unfinished ones resume from their snapshots.
    remaining = []
    for trial in trials:
        summary = read_complete(paths.members_storage, trial.key)
        if summary is not None:
            outcome.members.append(MemberOutcome(trial, "done earlier", summary))
        else:
            remaining.append(trial)

    try:
        tracking = (
            tracking_factory(spec, paths, trials, nodes=_alive_nodes(ray.nodes()))
            if tracking_factory
            else None
        )
    except TrackingError as exc:
        raise StudyInputError(str(exc)) from None
    outcome.tracking = tracking
    console.print(
        f"study [bold]{spec.name}[/] on {where}: {len(trials)} members "
        f"({len(outcome.members)} finished earlier), up to {plan.max_concurrent} at once, "
        f"{plan.cpus:g} CPU / {plan.gpus:g} GPU each -> {paths.label}",
        highlight=False,
    )
    try:
        if remaining or spec.search.algorithm == "optuna":
            _fit(spec, paths, remaining, plan, tracking, outcome, console)
    except BaseException as exc:
        # Interrupted (Ctrl-C) or crashed: the study run must not stay RUNNING forever.
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        _finish_tracking(tracking, outcome, console, status)
        raise
    _finish_tracking(tracking, outcome, console)
    return outcome


def _fit(spec, paths, remaining, plan, tracking, outcome: StudyOutcome, console) -> None:
    """Run the remaining trials with Tune and record each member's outcome."""
    from ray import tune

    from orchestrator.cluster.driver import member_driver, read_complete, trial_of
    from orchestrator.cluster.progress import MemberRow, StudyProgress
    from orchestrator.cluster.resources import DRIVER_RESOURCES
    from orchestrator.cluster.search import build_search

    # The compact progress view replaces Tune's own tables.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    search = build_search(spec, remaining)
    rows = {t.key: MemberRow(t.key, _label(t), spec.train.epochs) for t in remaining}
    progress = StudyProgress(spec.name, rows, spec.train.epochs, console)
    param_space = {
        "spec": spec.to_dict(),
        "members_storage": paths.members_storage,
        "tracking": tracking,
        **search.param_space,
    }
    tuner = tune.Tuner(
        tune.with_resources(member_driver, DRIVER_RESOURCES),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=search.num_samples,
            search_alg=search.search_alg,
            scheduler=search.scheduler,
            metric=search.metric,
            mode=search.mode,
            max_concurrent_trials=plan.max_concurrent,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=paths.tune_name,
            storage_path=paths.run_storage,
            verbose=0,
            callbacks=[progress],
        ),
    )
    try:
        grid = tuner.fit()
    finally:
        progress.stop()
    for result in grid:
        trial = trial_of(result.config, spec)
        summary = read_complete(paths.members_storage, trial.key)
        if summary is not None:
            outcome.members.append(MemberOutcome(trial, "done", summary))
        elif result.error is not None:
            outcome.members.append(MemberOutcome(trial, "failed", error=_first_line(result.error)))
        else:
            outcome.members.append(MemberOutcome(trial, "stopped"))
    outcome.members.sort(key=lambda m: (m.trial.config_index, m.trial.member))


def _alive_nodes(nodes: list[dict[str, Any]]) -> int:
    return sum(1 for node in nodes if node.get("Alive"))


def _finish_tracking(
    tracking: dict[str, Any] | None,
    outcome: StudyOutcome,
    console: Console,
    status: str | None = None,
) -> None:
    """Close the study run. The members' own runs are complete by now, so a tracking failure
    here is reported, not raised: it must not hide the study's result (or its real error)."""
    if tracking is None:
        return
    from orchestrator.tracking.study import finish_study

    try:
        finish_study(tracking, outcome, status)
    except Exception as exc:  # noqa: BLE001 - reported, see docstring
        console.print(
            f"[yellow]warning:[/] could not close the study's MLflow run: {exc}", highlight=False
        )


def _label(trial: Trial) -> str:
    values = " ".join(f"{k.split('.')[-1]}={v}" for k, v in trial.values.items())
    return f"{trial.key} seed={trial.seed}" + (f" {values}" if values else "")


def _trial_name(trial) -> str:
    key = (
        trial.config.get("trial", {}).get("key")
        if isinstance(trial.config.get("trial"), dict)
        else None
    )
    return key or f"trial-{trial.trial_id}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
