"""`ensemble` command line: thin wrappers that validate input first, then call the library."""

from __future__ import annotations

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


def load_spec(study: Path | None, overrides: list[str] | None) -> config.StudySpec:
    try:
        return config.load(study, overrides or [])
    except config.SpecError as exc:
        fail(str(exc))


@app.command()
def validate(study: StudyArg, set_: SetOpt = None) -> None:
    """Validate a study file and print the resolved spec as YAML."""
    spec = load_spec(study, set_)
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
    member: Annotated[int, typer.Option(help="member index (picks its seed)")] = 0,
    output: Annotated[
        Path | None, typer.Option(help="member dir (default runs/<study>/member-<k>)")
    ] = None,
) -> None:
    """Train one member in this process (no Ray) and print its snapshot/Polyak report.

    Re-running with the same output resumes from the latest snapshot.
    """
    spec = load_spec(study, set_)
    if not 0 <= member < len(spec.seeds()):
        fail(f"--member {member} is out of range: the study has {len(spec.seeds())} members")
    from orchestrator.cli_views import epoch_printer, member_report_table
    from orchestrator.data import DataNotFoundError
    from orchestrator.training.member import train_member
    from orchestrator.training.sink import DirectorySink

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
) -> None:
    """Run a whole study: Tune trials (search x seeds), each member trained by Ray Train."""
    spec = load_spec(study, set_)
    if smoke:
        spec = config.smoke(spec)
    from orchestrator.cli_views import study_summary
    from orchestrator.cluster import launch

    try:
        outcome = launch.run_study(
            spec, output=output, address=address, fresh=fresh, console=console
        )
    except (config.SpecError, launch.StudyInputError) as exc:
        fail(str(exc))
    study_summary(console, outcome)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def submit(
    study: StudyArg,
    address: Annotated[str, typer.Option(help="Ray dashboard, e.g. http://HEAD:8265")],
    set_: SetOpt = None,
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
    spec = load_spec(study, set_)
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
