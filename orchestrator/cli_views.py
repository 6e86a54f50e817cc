"""Rich tables and progress lines the CLI prints (kept apart so commands stay thin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from orchestrator.ensemble.combine import mean_softmax
from orchestrator.ensemble.metrics import accuracy, nll


def models_table(dataset: str, channels: int, image_size: int, num_classes: int) -> Table:
    from orchestrator.models import list_models

    table = Table(
        title=f"models for {dataset} ({channels}x{image_size}x{image_size}, {num_classes} classes)"
    )
    table.add_column("model")
    table.add_column("parameters", justify="right")
    table.add_column("M", justify="right")
    table.add_column("description")
    for name, params, description in list_models(
        in_channels=channels, image_size=image_size, num_classes=num_classes
    ):
        table.add_row(name, f"{params:,}", f"{params / 1e6:.2f}", description)
    return table


def epoch_printer(console: Console):
    def echo(epoch: int, metrics: dict[str, float]) -> None:
        parts = [
            f"epoch {epoch:3d}",
            f"loss {metrics['train_loss']:.4f}",
            f"train {metrics['train_acc']:.4f}",
            f"val {metrics['val_acc']:.4f}",
            f"lr {metrics['lr']:.4f}",
            f"{metrics['train_images_per_s']:.0f} img/s",
        ]
        if "polyak_val_acc" in metrics:
            parts.append(f"polyak val {metrics['polyak_val_acc']:.4f}")
        if "snapshot" in metrics:
            parts.append(f"[green]snapshot {int(metrics['snapshot'])}[/]")
        console.print("  ".join(parts), highlight=False, soft_wrap=True)

    return echo


def member_report_table(member_dir: Path) -> Table:
    """Each snapshot, the member's snapshot ensemble (mean softmax) and its Polyak weights."""
    from orchestrator.training.sink import read_member_dir

    meta, snapshots, polyak = read_member_dir(member_dir)
    labels = {s: np.load(Path(member_dir) / f"labels_{s}.npy") for s in ("val", "test")}
    table = Table(title=f"member {meta['member']} (seed {meta['seed']}) of {meta['study']}")
    for column in ("weights", "epoch", "val acc", "test acc", "test nll"):
        table.add_column(column, justify="left" if column == "weights" else "right")
    for snap in snapshots:
        m = snap.metrics
        table.add_row(
            f"snapshot {snap.index}",
            str(m["epoch"]),
            f"{m['val_acc']:.4f}",
            f"{m['test_acc']:.4f}",
            f"{m['test_nll']:.4f}",
        )
    if len(snapshots) > 1:
        ens = {s: mean_softmax(snap.logits(s) for snap in snapshots) for s in ("val", "test")}
        table.add_row(
            f"[bold]snapshot ensemble ({len(snapshots)})[/]",
            "",
            f"{accuracy(ens['val'], labels['val']):.4f}",
            f"[bold]{accuracy(ens['test'], labels['test']):.4f}[/]",
            f"{nll(ens['test'], labels['test']):.4f}",
        )
    if polyak is not None:
        m = polyak.metrics
        table.add_row(
            "[bold]polyak weights[/]",
            str(m["epoch"]),
            f"{m['val_acc']:.4f}",
            f"[bold]{m['test_acc']:.4f}[/]",
            f"{m['test_nll']:.4f}",
        )
    return table


def study_summary(console: Console, outcome) -> None:
    """One line per member: status, accuracies, and where its snapshots live."""
    console.print(f"\n[bold]{outcome.spec.name}[/] ({outcome.paths.run}) -> {outcome.paths.output}")
    for member in outcome.members:
        t = member.trial
        line = f"  {t.key} seed={t.seed} ({member.status})"
        if member.summary:
            m = member.summary.get("metrics", {})
            for name in ("val_acc", "snapshot_test_acc", "polyak_test_acc"):
                if name in m:
                    line += f" {name}={m[name]:.4f}"
            line += f" -> {member.summary.get('path')}"
        if member.error:
            line += f" [red]{member.error}[/]"
        console.print(line, highlight=False, soft_wrap=True)


def tracking_summary(console: Console, outcome) -> None:
    """Where the study's MLflow runs are, and how to browse them."""
    tracking = getattr(outcome, "tracking", None)
    if not tracking:
        return
    uri = tracking["uri"]
    browse = f"ensemble ui {outcome.paths.output}" if uri.startswith("sqlite:") else f"open {uri}"
    console.print(
        f"  MLflow: experiment {tracking['experiment_id']}, study run "
        f"{tracking['study_run_id']} -> {browse}",
        highlight=False,
        soft_wrap=True,
    )
