"""A report's PNG plots: accuracy vs ensemble size, snapshot accuracy over training, and a
reliability diagram of the best single member vs the best ensemble.

matplotlib Agg through Figure objects: no pyplot global state. matplotlib is imported only
when plots are made, so importing the package stays light.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.ensemble.report_files import write_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from orchestrator.ensemble.report import Report

PLOT_FILES = ("accuracy_vs_size.png", "snapshot_accuracy.png", "reliability.png")


def make_plots(report: Report, out_dir: str | Path) -> list[Path]:
    """Write the PLOT_FILES of `report` into `out_dir`; returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    written = []
    for name, draw, size in (
        (PLOT_FILES[0], _accuracy_vs_size, (7, 4.5)),
        (PLOT_FILES[1], _snapshot_accuracy, (7, 4.5)),
        (PLOT_FILES[2], _reliability, (5, 5)),
    ):
        fig = Figure(figsize=size)
        draw(fig.add_subplot(), report)
        FigureCanvasAgg(fig)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        write_atomic(out / name, png.getvalue())
        written.append(out / name)
    return written


def _integer_x(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _accuracy_vs_size(ax: Axes, report: Report) -> None:
    """1. accuracy vs ensemble size, per method."""
    labelled_snapshot = False
    for e in report.ensembles:
        curve = e.size_curve
        if not curve or len(curve["sizes"]) < 2:
            continue
        y = [100 * v for v in curve["test_acc"]]
        if e.family == "snapshot":
            ax.plot(
                curve["sizes"],
                y,
                color="grey",
                alpha=0.5,
                lw=1,
                label=None if labelled_snapshot else "snapshot (per member)",
            )
            labelled_snapshot = True
        else:
            ax.plot(curve["sizes"], y, marker="o", ms=3, label=e.name)
    b = report.baseline
    ax.axhline(100 * b["best_single"]["test_acc"], ls="--", color="k", lw=1, label="best single")
    ax.axhline(100 * b["mean_single"]["test_acc"], ls=":", color="k", lw=1, label="mean single")
    _integer_x(ax)
    ax.set_xlabel("ensemble size (models, in each curve's order)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{report.study}: accuracy vs ensemble size")
    ax.legend(fontsize=7)


def _snapshot_accuracy(ax: Axes, report: Report) -> None:
    """2. snapshot accuracy over training, per member (Polyak weights as stars)."""
    for m in report.members:
        epochs = [s.epoch for s in m.snapshots]
        line = ax.plot(
            epochs,
            [100 * s.metrics["test_acc"] for s in m.snapshots],
            marker="o",
            ms=4,
            label=m.key,
        )
        if m.polyak:
            ax.plot(
                [m.polyak.epoch],
                [100 * m.polyak.metrics["test_acc"]],
                marker="*",
                ms=10,
                color=line[0].get_color(),
                ls="none",
            )
    _integer_x(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("snapshot accuracy over training (stars: Polyak weights)")
    ax.legend(fontsize=7)


def _reliability(ax: Axes, report: Report) -> None:
    """3. reliability diagram: best single vs best ensemble."""
    ax.plot([0, 1], [0, 1], ls="--", color="k", lw=1, label="perfect calibration")
    for role in ("best_single", "best_ensemble"):
        table = report.reliability.get(role)
        if not table:
            continue
        label = f"{role.replace('_', ' ')}: {table['name']}"
        pts = [
            (c, a)
            for c, a, n in zip(table["confidence"], table["accuracy"], table["count"], strict=True)
            if n
        ]
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                ms=4,
                label=f"{label} (ECE {table['ece']:.3f})",
            )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (test, 15 bins)")
    ax.legend(fontsize=7)
