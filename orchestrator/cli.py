"""`ensemble` command line: thin wrappers that validate input first, then call the library."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator import config

app = typer.Typer(
    help="Train ResNet ensembles on Ray, track them in MLflow, report the accuracy they buy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

StudyArg = Annotated[Path, typer.Argument(help="study YAML file (see jobs/studies/)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a field: --set model.depth=56 (repeatable)"),
]


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="apply a profile of the study file (e.g. full)"),
]


def load_spec(
    study: Path | None, overrides: list[str] | None, profile: str | None = None
) -> config.StudySpec:
    try:
        return config.load(study, overrides or [], profile)
    except config.SpecError as exc:
        fail(str(exc))


@app.command()
def validate(study: StudyArg, set_: SetOpt = None, profile: ProfileOpt = None) -> None:
    """Validate a study file and print the resolved spec as YAML."""
    spec = load_spec(study, set_, profile)
    sys.stdout.write(config.dump_yaml(spec))


@app.command()
def models(
    dataset: Annotated[str, typer.Option(help="size models for this data set")] = "cifar10",
) -> None:
    """List every registered model with its parameter count for a data set."""
    from orchestrator.cli_views import models_table
    from orchestrator.data.info import STANDARD_INFO

    if dataset not in STANDARD_INFO:
        fail(f"--dataset {dataset!r} is unknown; allowed values: {', '.join(STANDARD_INFO)}")
    info = STANDARD_INFO[dataset]
    console.print(models_table(dataset, info.channels, info.image_size, info.num_classes))


@app.command("train-member")
def train_member_cmd(
    study: StudyArg,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    member: Annotated[int, typer.Option(help="member index (picks its seed)")] = 0,
    output: Annotated[
        Path | None, typer.Option(help="member dir (default runs/<study>/member-<k>)")
    ] = None,
) -> None:
    """Train one member in this process (no Ray) and print its snapshot/Polyak report.

    Re-running with the same output resumes from the latest snapshot.
    """
    spec = load_spec(study, set_, profile)
    if not 0 <= member < len(spec.seeds()):
        fail(f"--member {member} is out of range: the study has {len(spec.seeds())} members")
    from orchestrator.cli_views import epoch_printer, member_report_table
    from orchestrator.data import DataNotFoundError
    from orchestrator.training.member import train_member
    from orchestrator.training.sink import DirectorySink

    if spec.model.transfer is not None and spec.model.transfer.study is not None:
        from orchestrator.tracking.init_source import InitSourceError, materialize_init

        try:
            spec = materialize_init(spec, member)
        except InitSourceError as exc:
            fail(str(exc))
        console.print(f"initialised from {spec.model.init.origin}", highlight=False)
    member_dir = output or Path("runs") / spec.name / f"member-{member:03d}"
    member_dir.mkdir(parents=True, exist_ok=True)
    (member_dir / "study.yaml").write_text(config.dump_yaml(spec))
    console.print(f"training member {member} of [bold]{spec.name}[/] -> {member_dir}")
    try:
        train_member(spec, DirectorySink(member_dir, echo=epoch_printer(console)), member=member)
    except DataNotFoundError as exc:
        fail(str(exc))
    console.print(member_report_table(member_dir))


@app.command()
def run(
    study: StudyArg,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    output: Annotated[Path | None, typer.Option(help="study dir (default runs/<study>)")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster (HOST:6379, ray://HOST:10001); default: RAY_ADDRESS or a local Ray"
        ),
    ] = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="shrink the study to a quick check")
    ] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="start a new run; earlier runs are kept")
    ] = False,
    tracking: Annotated[
        bool,
        typer.Option(
            "--tracking/--no-tracking",
            help="track in MLflow: tracking.uri, or SQLite in the output dir",
        ),
    ] = True,
) -> None:
    """Run a whole study: Tune trials (search x seeds), each member trained by Ray Train."""
    spec = load_spec(study, set_, profile)
    if smoke:
        spec = config.smoke(spec)
    from orchestrator.cli_views import study_summary, tracking_summary
    from orchestrator.cluster import launch

    factory = None
    if tracking:
        from orchestrator.tracking.study import start_study as factory
    try:
        outcome = launch.run_study(
            spec,
            output=output,
            address=address,
            fresh=fresh,
            console=console,
            tracking_factory=factory,
        )
    except (config.SpecError, launch.StudyInputError) as exc:
        fail(str(exc))
    study_summary(console, outcome)
    tracking_summary(console, outcome)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def submit(
    study: StudyArg,
    address: Annotated[str, typer.Option(help="Ray dashboard, e.g. http://HEAD:8265")],
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="shrink the study to a quick check")
    ] = False,
    output: Annotated[
        str | None, typer.Option(help="study dir on the cluster (default runs/<study>)")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return")] = False,
    token: Annotated[
        str | None,
        typer.Option(envvar="RAY_AUTH_TOKEN", help="Ray auth token (default: ~/.ray/auth_token)"),
    ] = None,
) -> None:
    """Submit a study as a Ray job; follow its logs and exit with its status."""
    spec = load_spec(study, set_, profile)
    if smoke:
        spec = config.smoke(spec)
    from orchestrator.cluster.submit import SubmitError, submit_study

    try:
        job_id, status = submit_study(
            spec,
            address,
            output=output,
            wait=not no_wait,
            token=token,
            echo=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
        )
    except SubmitError as exc:
        fail(str(exc))
    if status is None:
        console.print(job_id)
        return
    console.print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def ui(
    store: Annotated[
        str,
        typer.Argument(help="study dir (runs/<study>, holds mlflow.db), a .db file, or a URI"),
    ] = ".",
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 5000,
) -> None:
    """Serve the MLflow UI of a study's store on 127.0.0.1 and print its URL (Ctrl-C stops it)."""
    from orchestrator.tracking.errors import TrackingError
    from orchestrator.tracking.ui import start_ui

    # A plain `kill` must stop the server too (it runs in its own session): SIGTERM becomes
    # SystemExit, which start_ui and the `finally` below turn into server.stop().
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    console.print(f"starting the MLflow UI for {store} ...", highlight=False)
    try:
        server = start_ui(store, port)
    except TrackingError as exc:
        fail(str(exc))
    if server.process is None:
        console.print(f"tracking server: {server.url}", highlight=False)
        return
    console.print(f"MLflow UI: {server.url}  (Ctrl-C stops it)", highlight=False)
    sys.stdout.flush()
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("aggregate")
def aggregate_cmd(
    study: Annotated[
        str, typer.Argument(help="study dir (runs/<study>) or a study name with --store")
    ],
    store: Annotated[
        str | None, typer.Option(help="MLflow tracking URI to find the study in")
    ] = None,
    run: Annotated[
        str | None, typer.Option(help="which run of the study (default: latest)")
    ] = None,
    last_k: Annotated[
        int | None, typer.Option(help="snapshots per member in snapshot ensembles")
    ] = None,
    bn_batches: Annotated[
        int | None, typer.Option(help="BatchNorm recalibration batches (default: a full pass)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="report dir (default <study dir>/report)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace an existing report")
    ] = False,
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="log an ensemble run to MLflow")
    ] = True,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster for weight jobs (default: local)")
    ] = None,
) -> None:
    """Build every ensemble of a finished study and report the accuracy it buys."""
    from orchestrator.cluster.aggregation import StudyLookupError, aggregate_study
    from orchestrator.ensemble import AggregateOptions, print_report
    from orchestrator.ensemble.errors import AggregateError
    from orchestrator.tracking.errors import TrackingError

    try:
        options = AggregateOptions(snapshot_last_k=last_k, bn_batches=bn_batches)
        result = aggregate_study(
            study,
            store=store,
            run=run,
            options=options,
            output=output,
            overwrite=overwrite,
            log_to_mlflow=log,
            address=address,
        )
    except (StudyLookupError, AggregateError, TrackingError, ValueError) as exc:
        fail(str(exc))
    print_report(result.report, console)
    console.print(f"report: {result.report_dir}", highlight=False)
    if result.ensemble_run_id:
        console.print(
            f"MLflow ensemble run: {result.ensemble_run_id} (study {result.study.study}, {result.study.run})",
            highlight=False,
        )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
