"""Tables and figures of notebooks/analyze_study.ipynb: one study read back from MLflow.

    study, members = open_study("runs/my-study", "my-study")
    members_table(members)                              # pandas DataFrame
    snapshot_curves(members, histories)                 # matplotlib Figure
    report, source = study_report(members, saved)      # saved report.json, or aggregated here
    size_curves_figure(report); calibration_table(report); reliability_figure(report)
    effects = search_effects(members); search_effects_figure(effects)

No mlflow here (tracking/ reads the store). Figures are `matplotlib.figure.Figure` objects,
not pyplot state: a notebook shows one when it is a cell's last expression (`%matplotlib
inline` registers the PNG formatter). Accuracies are fractions in the tables, percent in plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.ensemble.records import MemberRecord

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from orchestrator.ensemble.report import Report
    from orchestrator.tracking.reader import StudyRun

ROOT = Path(__file__).resolve().parents[1]


def store_location(store: str | Path) -> str:
    """A tracking URI as given; a relative study dir from the cwd, else from the repo root.

    A notebook runs in notebooks/, so "runs/my-study" would otherwise miss the study that
    `ensemble run` wrote from the repository root.
    """
    text = str(store)
    if "://" in text or Path(text).is_absolute() or Path(text).exists():
        return text
    return str(ROOT / text)


def open_study(
    store: str | Path, study: str, run: str | None = None
) -> tuple[StudyRun, list[MemberRecord]]:
    """The study run (`run`, or the latest) and its finished members, by member index."""
    from orchestrator.tracking.reader import find_study, load_members, resolve_store

    found = find_study(resolve_store(store_location(store)), study, run)
    return found, load_members(found.uri, found.run_id)


# Members -------------------------------------------------------------------------------
def members_table(members: Sequence[MemberRecord]) -> pd.DataFrame:
    """One row per member: key, seed, searched values, final snapshot and Polyak accuracy."""
    import pandas as pd

    rows = []
    for m in members:
        final = m.snapshots[-1] if m.snapshots else None
        polyak = m.polyak.metrics if m.polyak else {}
        rows.append(
            {
                "key": m.key,
                "member": m.member,
                "seed": m.seed,
                **{k: _plain(v) for k, v in sorted(m.values.items())},
                "snapshots": len(m.snapshots),
                "final_epoch": final.epoch if final else None,
                "val_acc": final.metrics.get("val_acc") if final else None,
                "test_acc": final.metrics.get("test_acc") if final else None,
                "polyak_val_acc": polyak.get("val_acc"),
                "polyak_test_acc": polyak.get("test_acc"),
            }
        )
    return pd.DataFrame(rows).set_index("key")


def _plain(value: Any) -> Any:
    """A searched value usable as a table cell and a group key (lists/dicts become text)."""
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def snapshot_curves(
    members: Sequence[MemberRecord], histories: dict[str, pd.DataFrame], metric: str = "val_acc"
) -> Figure:
    """`metric` per epoch per member from its MLflow history; snapshot epochs as circles,
    the Polyak weights' per-epoch validation accuracy dashed."""
    fig, ax = _figure((7, 4.5))
    for m in members:
        history = histories.get(m.run_id or "")
        if history is None or metric not in history:
            continue
        curve = 100 * history[metric].dropna()
        (line,) = ax.plot(curve.index, curve.values, lw=1.5, label=m.key)
        marks = [s.epoch for s in m.snapshots if s.epoch in curve.index]
        ax.plot(marks, curve.loc[marks].values, "o", color=line.get_color(), ms=7, mfc="none")
        if metric == "val_acc" and "polyak_val_acc" in history:
            poly = 100 * history["polyak_val_acc"].dropna()
            ax.plot(poly.index, poly.values, ls="--", lw=1, color=line.get_color())
    _integer_x(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric} per epoch (circles: snapshots; dashed: Polyak weights)")
    if ax.lines:
        ax.legend(fontsize=7)
    return fig


# Ensembles -----------------------------------------------------------------------------
def study_report(
    members: Sequence[MemberRecord], saved: dict[str, Any] | None
) -> tuple[Report, str]:
    """The report of a saved report.json, or one aggregated here from the members' cached
    logits (weight ensembles off: they need BN recalibration, i.e. the data and minutes)."""
    from orchestrator.ensemble import AggregateOptions, Report, aggregate

    if saved is not None:
        return Report.from_dict(saved), "saved"
    return aggregate(list(members), AggregateOptions(weight_ensembles=False)), "in-process"


def size_curves_table(report: Report) -> pd.DataFrame:
    """Test accuracy by ensemble size, one column per entry that has a size curve."""
    import pandas as pd

    columns = {
        e.name: pd.Series(e.size_curve["test_acc"], index=e.size_curve["sizes"])
        for e in report.ensembles
        if e.size_curve
    }
    table = pd.DataFrame(columns)
    table.index.name = "size"
    return table


def size_curves_figure(report: Report) -> Figure:
    """Accuracy vs ensemble size per method, with best and mean single members (the report's
    own plot, so notebook and report.md show the same picture)."""
    from orchestrator.ensemble.report_plots import _accuracy_vs_size

    fig, ax = _figure((7, 4.5))
    _accuracy_vs_size(ax, report)
    return fig


def calibration_table(report: Report) -> pd.DataFrame:
    """Accuracy, NLL, ECE and Brier (test) of the best single member and every ensemble,
    best val accuracy first; `role` marks the two in the reliability diagram."""
    import pandas as pd

    best_single = report.baseline["best_single"]["member"]
    single = next(m for m in report.members if m.key == best_single)
    rows = [{"name": single.key, "role": "best single", **single.final.metrics}]
    for e in report.ensembles:
        role = "best ensemble" if e.name == report.best_ensemble else e.family
        rows.append({"name": e.name, "role": role, **e.metrics})
    cols = ["name", "role", "test_acc", "test_nll", "test_ece", "test_brier", "val_acc", "val_nll"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    return table.sort_values("val_acc", ascending=False, kind="stable").set_index("name")


def reliability_figure(report: Report) -> Figure:
    """Reliability diagram (test, 15 bins) of the best single member vs the best ensemble."""
    from orchestrator.ensemble.report_plots import _reliability

    fig, ax = _figure((5, 5))
    _reliability(ax, report)
    return fig


# What the search explored -------------------------------------------------------------
# Fields shown for context when the search did not vary them: what "depth/schedule" means here.
FIXED_FIELDS = ("model.name", "model.depth", "schedule.kind", "schedule.cycles", "train.epochs")


@dataclass
class SearchEffects:
    keys: list[str]  # searched spec fields (dotted), empty when the study searched nothing
    by_key: dict[str, pd.DataFrame]  # key -> final val/test acc (mean, std, members) per value
    by_config: pd.DataFrame | None  # the same per combination of all searched values
    fixed: dict[str, Any]  # FIXED_FIELDS not searched, as the first member's spec has them

    @property
    def searched(self) -> bool:
        return bool(self.keys)

    def describe(self) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items())
        if not self.searched:
            return (
                "This study searched nothing (search.space is empty): every member has the "
                "same configuration and differs only by seed, so there are no depth/schedule "
                f"effects to compare. All members: {fixed}."
            )
        single = [k for k in self.keys if len(self.by_key[k]) < 2]
        text = f"Searched: {', '.join(self.keys)}." + (f" Fixed: {fixed}." if fixed else "")
        if single:
            text += f" Only one value was trained for {', '.join(single)} (a smoke run?)."
        return text


def search_effects(members: Sequence[MemberRecord]) -> SearchEffects:
    """Members grouped by their searched values (e.g. model.depth, schedule.cycles)."""
    table = members_table(members) if members else None
    keys = sorted({k for m in members for k in m.values})
    fixed = {k: v for k in FIXED_FIELDS if k not in keys and (v := _field(members, k)) is not None}
    if table is None or not keys:
        return SearchEffects([], {}, None, fixed)
    metrics = [c for c in ("val_acc", "test_acc", "polyak_val_acc") if table[c].notna().any()]

    def summary(by: str | list[str]) -> pd.DataFrame:
        grouped = table.groupby(by, dropna=False)
        out = grouped[metrics].mean().add_prefix("mean_")
        out["std_val_acc"] = grouped["val_acc"].std()
        out["members"] = grouped.size()
        return out

    return SearchEffects(keys, {k: summary(k) for k in keys}, summary(keys), fixed)


def _field(members: Sequence[MemberRecord], dotted: str) -> Any:
    """A dotted field of the first member's resolved spec (None when absent)."""
    value: Any = members[0].spec if members else None
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def search_effects_figure(effects: SearchEffects) -> Figure | None:
    """Mean final val accuracy per value of each searched field (error bars: std over
    members); None when nothing was searched."""
    if not effects.searched:
        return None
    fig, axes = _figure((3.5 * len(effects.keys), 3.5), ncols=len(effects.keys))
    for ax, key in zip(axes, effects.keys, strict=True):
        table = effects.by_key[key]
        labels = [str(v) for v in table.index]
        ax.bar(labels, 100 * table["mean_val_acc"], yerr=100 * table["std_val_acc"].fillna(0))
        ax.set_xlabel(key)
        ax.set_ylabel("mean final val acc (%)")
    fig.suptitle("what the search explored")
    return fig


# Plumbing ------------------------------------------------------------------------------
def _figure(size: tuple[float, float], ncols: int = 1):
    """A Figure outside pyplot (no global state); returns (fig, ax) or (fig, [axes])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, (axes[0] if ncols == 1 else list(axes))


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
