"""The aggregation report: data model, report.json (schema in REPORT_SCHEMA.md), and
`write_report`, which writes it with report.md (report_render.py) and PNG plots
(report_plots.py); `print_report` shows it as a rich terminal table.

A `Report` holds only numbers and names derived from its inputs (no timestamps, no absolute
machine paths), so aggregating the same members twice gives the same report.json. Everything
the plots need (size curves, snapshot metrics, reliability bins) is inside the report, so
`write_report(Report.from_dict(json.load(...)), dir)` re-renders a report without the members.

`write_report` never loses an earlier report: with overwrite=False (default) and a report
already in `out_dir`, it writes to the first free numbered sub-directory `out_dir/report-2`,
`report-3`, ... and returns that path. overwrite=True replaces the report files in `out_dir`
(report.json, report.md, plots/*.png) and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.ensemble.report_files import PLOTS_DIR, REPORT_FILES, report_dir_for, write_atomic
from orchestrator.ensemble.report_plots import PLOT_FILES, make_plots
from orchestrator.ensemble.report_render import print_report, render_markdown, rich_tables

__all__ = [  # this module's names before the files, plots and text renderings were split off
    "METRIC_KEYS",
    "PLOTS_DIR",
    "PLOT_FILES",
    "REPORT_FILES",
    "SCHEMA_VERSION",
    "EnsembleEntry",
    "MemberEntry",
    "ModelEntry",
    "Report",
    "make_plots",
    "print_report",
    "render_markdown",
    "report_dir_for",
    "rich_tables",
    "write_report",
]

SCHEMA_VERSION = 1
METRIC_KEYS = (
    "test_acc",
    "test_nll",
    "test_ece",
    "test_brier",
    "val_acc",
    "val_nll",
    "val_ece",
    "val_brier",
)


@dataclass
class ModelEntry:
    """One measured set of weights of a member: a snapshot (index k) or its Polyak weights."""

    kind: str  # "snapshot" | "polyak"
    index: int
    epoch: int
    metrics: dict[str, float]  # METRIC_KEYS


@dataclass
class MemberEntry:
    key: str
    member: int
    seed: int
    values: dict[str, Any]
    run_id: str | None
    snapshots: list[ModelEntry]  # in training order; the last is the member's final model
    polyak: ModelEntry | None

    @property
    def final(self) -> ModelEntry:
        return self.snapshots[-1]


@dataclass
class EnsembleEntry:
    name: str  # unique, e.g. "independent/mean_softmax", "snapshot/m000-...", "greedy"
    family: str  # independent | snapshot | members_x_snapshots | greedy | polyak | swa | ...
    method: str  # mean_softmax | mean_logits | vote | weight_average
    kind: str  # "prediction" (combined outputs) | "weight" (one network of averaged weights)
    members: list[str]  # member keys used
    components: list[dict[str, Any]]  # {"member", "kind", "index", "weight"}
    metrics: dict[str, float]
    gain_over_best_single: float  # test accuracy points (x100) over the best single member
    gain_over_mean_single: float  # ... over the mean of the single members
    disagreement: float | None  # mean pairwise test disagreement of the components
    size_curve: dict[str, Any] | None  # {"order", "sizes", "test_acc"}
    cost: dict[str, int]  # {"models_at_test_time", "members_trained"}
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    study: str
    data_fingerprint: str
    num_classes: int
    num_val: int
    num_test: int
    options: dict[str, Any]
    baseline: dict[str, Any]
    members: list[MemberEntry]
    ensembles: list[EnsembleEntry]
    skipped: list[dict[str, str]]
    best_ensemble: str | None
    reliability: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    def ensemble(self, name: str) -> EnsembleEntry:
        for entry in self.ensembles:
            if entry.name == name:
                return entry
        raise KeyError(f"no ensemble {name!r}; have {[e.name for e in self.ensembles]}")

    def families(self) -> set[str]:
        return {e.family for e in self.ensembles}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        ordered: dict[str, Any] = {"schema_version": data.pop("schema_version")}
        ordered |= data
        for member, entry in zip(ordered["members"], self.members, strict=True):
            member["final"] = asdict(entry.final)
        return ordered

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"report schema_version {version}; this code reads {SCHEMA_VERSION}")
        data = dict(data)
        members = []
        for m in data.pop("members"):
            m = {k: v for k, v in m.items() if k != "final"}
            m["snapshots"] = [ModelEntry(**s) for s in m["snapshots"]]
            m["polyak"] = ModelEntry(**m["polyak"]) if m.get("polyak") else None
            members.append(MemberEntry(**m))
        ensembles = [EnsembleEntry(**e) for e in data.pop("ensembles")]
        return cls(members=members, ensembles=ensembles, **data)

    def to_json(self) -> str:
        # allow_nan=False: report.json stays strict JSON for every consumer.
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


# Writing ---------------------------------------------------------------------------------
def write_report(
    report: Report, out_dir: str | Path, *, overwrite: bool = False, plots: bool = True
) -> Path:
    """Write report.json, report.md and plots/*.png; returns the directory written to.

    Never overwrites an earlier report unless `overwrite` (see the module docstring).
    """
    target = report_dir_for(out_dir, overwrite)
    target.mkdir(parents=True, exist_ok=True)
    plot_paths: list[Path] = []
    if plots:
        (target / PLOTS_DIR).mkdir(exist_ok=True)
        plot_paths = make_plots(report, target / PLOTS_DIR)
    write_atomic(target / "report.md", render_markdown(report, plot_paths, target).encode())
    # report.json last: its presence marks a complete report.
    write_atomic(target / "report.json", report.to_json().encode())
    return target
