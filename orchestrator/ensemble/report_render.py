"""A report as text: report.md (`render_markdown`) and rich terminal tables (`print_report`).

Both show the same numbers, formatted alike: accuracies in percent with two decimals, gains
in signed accuracy points, "-" where a value does not apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.ensemble.report import MemberEntry, ModelEntry, Report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gain(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _single_models(member: MemberEntry) -> list[ModelEntry]:
    """What a member contributes as a single model: its final snapshot, and Polyak weights."""
    return [member.final] + ([member.polyak] if member.polyak else [])


# Markdown -------------------------------------------------------------------------------
def render_markdown(
    report: Report, plots: list[Path] | None = None, base: Path | None = None
) -> str:
    b = report.baseline
    lines = [
        f"# Ensemble report: {report.study}",
        "",
        f"{len(report.members)} members, {report.num_classes} classes, "
        f"{report.num_val} validation / {report.num_test} test images "
        f"(data fingerprint `{report.data_fingerprint[:12]}`).",
        "",
        f"Best single member (final snapshot, by test accuracy): **{b['best_single']['member']}** "
        f"{_pct(b['best_single']['test_acc'])}%; mean single member "
        f"{_pct(b['mean_single']['test_acc'])}%.",
    ]
    if report.best_ensemble:
        best = report.ensemble(report.best_ensemble)
        lines += [
            f"Best ensemble (chosen on validation accuracy): **{best.name}** "
            f"{_pct(best.metrics['test_acc'])}% test accuracy, "
            f"{_gain(best.gain_over_best_single)} points over the best single member, "
            f"{_gain(best.gain_over_mean_single)} over the mean.",
        ]
    lines += [
        "",
        "## Single members",
        "",
        "| member | seed | weights | epoch | test acc % | NLL | ECE | Brier | val acc % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.members:
        for entry in _single_models(m):
            label = "final snapshot" if entry.kind == "snapshot" else "polyak"
            x = entry.metrics
            lines.append(
                f"| {m.key} | {m.seed} | {label} | {entry.epoch} | {_pct(x['test_acc'])} | "
                f"{_num(x['test_nll'])} | {_num(x['test_ece'])} | {_num(x['test_brier'])} | "
                f"{_pct(x['val_acc'])} |"
            )
    lines += [
        "",
        "## Ensembles",
        "",
        "Gains are test accuracy points over the best / the mean single member (final snapshots).",
        "",
        "| ensemble | kind | models | test acc % | gain best | gain mean | NLL | ECE | Brier "
        "| disagreement | val acc % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report.ensembles:
        x = e.metrics
        lines.append(
            f"| {e.name} | {e.kind} | {e.cost['models_at_test_time']} | {_pct(x['test_acc'])} | "
            f"{_gain(e.gain_over_best_single)} | {_gain(e.gain_over_mean_single)} | "
            f"{_num(x['test_nll'])} | {_num(x['test_ece'])} | {_num(x['test_brier'])} | "
            f"{_num(e.disagreement, 3)} | {_pct(x['val_acc'])} |"
        )
    notes = [(e.name, n) for e in report.ensembles for n in e.notes]
    if notes:
        lines += ["", "### Notes", ""] + [f"- **{name}**: {note}" for name, note in notes]
    if report.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- **{s['name']}**: {s['reason']}" for s in report.skipped]
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            rel = p.relative_to(base) if base is not None else p
            lines.append(f"![{p.stem}]({rel.as_posix()})")
    return "\n".join(lines) + "\n"


# Terminal -------------------------------------------------------------------------------
def rich_tables(report: Report) -> list:
    """Two rich Tables: single members, then ensembles (best ensemble in bold).

    Compact (3-decimal NLL/ECE, no Brier or kind: report.md has them) to fit 80 columns;
    n = models evaluated at test time (1 for a weight ensemble).
    """
    from rich import box
    from rich.table import Table

    def table(title: str, columns: tuple[str, ...], left: int) -> Table:
        t = Table(
            title=title,
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            show_edge=False,
            pad_edge=False,
            title_justify="left",
        )
        for n, col in enumerate(columns):
            t.add_column(col, justify="left" if n < left else "right", no_wrap=True)
        return t

    singles = table(
        f"{report.study}: single members (test)", ("member", "weights", "acc %", "NLL", "ECE"), 2
    )
    for m in report.members:
        for entry in _single_models(m):
            x = entry.metrics
            singles.add_row(
                m.key,
                "final" if entry.kind == "snapshot" else "polyak",
                _pct(x["test_acc"]),
                _num(x["test_nll"], 3),
                _num(x["test_ece"], 3),
            )
    ensembles = table(
        "ensembles (test; gains = accuracy points over the best / mean single member)",
        ("ensemble", "n", "acc %", "+best", "+mean", "NLL", "ECE", "disagr"),
        1,
    )
    for e in report.ensembles:
        x = e.metrics
        ensembles.add_row(
            e.name,
            str(e.cost["models_at_test_time"]),
            _pct(x["test_acc"]),
            _gain(e.gain_over_best_single),
            _gain(e.gain_over_mean_single),
            _num(x["test_nll"], 3),
            _num(x["test_ece"], 3),
            _num(e.disagreement, 3),
            style="bold" if e.name == report.best_ensemble else None,
        )
    return [singles, ensembles]


def print_report(report: Report, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    for table in rich_tables(report):
        console.print(table)
    if report.skipped:
        for s in report.skipped:
            console.print(f"[dim]skipped {s['name']}: {s['reason']}[/dim]")
