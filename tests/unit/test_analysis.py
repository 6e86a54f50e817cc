"""orchestrator.analysis (the notebook's tables and figures) on in-memory members."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from orchestrator import analysis
from orchestrator.ensemble import MemberRecord, SnapshotRef


def member(index, values, rng, labels, classes=3):
    def logits(split):
        x = rng.normal(size=(len(labels[split]), classes))
        x[np.arange(len(x)), labels[split]] += 1.0 + 0.2 * index
        return x.astype(np.float32)

    def ref(kind, k, epoch):
        data = {"val": logits("val"), "test": logits("test")}
        metrics = {"val_acc": 0.5 + 0.01 * index, "test_acc": 0.4 + 0.01 * index, "epoch": epoch}
        return SnapshotRef(kind, k, epoch, metrics, lambda s: data[s], lambda: {}, "")

    return MemberRecord(
        key=f"m{index:03d}-abc",
        member=index,
        seed=index,
        values=values,
        spec={
            "name": "memory",
            "model": {"name": "resnet", "depth": 20},
            "schedule": {"cycles": 2},
        },
        data_fingerprint="fp",
        num_classes=classes,
        snapshots=[ref("snapshot", 0, 2), ref("snapshot", 1, 4)],
        polyak=ref("polyak", 0, 4),
        load_labels=lambda split: labels[split],
        run_id=f"run{index}",
    )


@pytest.fixture
def searched():
    rng = np.random.default_rng(0)
    labels = {"val": rng.integers(0, 3, 40), "test": rng.integers(0, 3, 50)}
    grid = [(20, 2), (20, 3), (32, 2), (32, 3)]
    return [
        member(i, {"model.depth": d, "schedule.cycles": c}, rng, labels)
        for i, (d, c) in enumerate(grid)
    ]


def test_members_table_has_searched_values_and_final_accuracies(searched):
    table = analysis.members_table(searched)
    assert list(table.index) == [m.key for m in searched]
    assert {
        "seed",
        "model.depth",
        "schedule.cycles",
        "val_acc",
        "test_acc",
        "polyak_val_acc",
    } <= set(table.columns)
    assert table.loc["m001-abc", "val_acc"] == pytest.approx(0.51)
    assert table.loc["m003-abc", "model.depth"] == 32


def test_search_effects_group_members_by_each_searched_value(searched):
    effects = analysis.search_effects(searched)
    assert effects.searched and effects.keys == ["model.depth", "schedule.cycles"]
    depth = effects.by_key["model.depth"]
    assert depth.loc[20, "mean_val_acc"] == pytest.approx(0.505)
    assert depth.loc[32, "members"] == 2
    assert len(effects.by_config) == 4
    assert "model.depth" not in effects.fixed and effects.fixed["model.name"] == "resnet"
    assert analysis.search_effects_figure(effects) is not None


def test_nothing_searched_is_said_and_not_plotted(searched):
    plain = [dataclasses.replace(m, values={}) for m in searched]
    effects = analysis.search_effects(plain)
    assert not effects.searched
    assert "searched nothing" in effects.describe()
    assert "model.depth=20" in effects.describe()
    assert analysis.search_effects_figure(effects) is None


def test_in_process_report_tables_and_figures(searched):
    report, source = analysis.study_report(searched, None)
    assert source == "in-process"
    assert not report.families() & {"swa", "uniform_soup", "greedy_soup"}  # weight ensembles off
    sizes = analysis.size_curves_table(report)
    assert list(sizes["independent/mean_softmax"].dropna().index) == [1, 2, 3, 4]
    calibration = analysis.calibration_table(report)
    roles = set(calibration["role"])
    assert {"best single", "best ensemble"} <= roles
    assert calibration["test_ece"].notna().all()
    again, saved = analysis.study_report(searched, report.to_dict())
    assert saved == "saved" and again.to_dict() == report.to_dict()
    for figure in (analysis.size_curves_figure(report), analysis.reliability_figure(report)):
        assert figure.axes and figure.axes[0].lines


def test_snapshot_curves_mark_snapshot_epochs(searched):
    history = pd.DataFrame({"val_acc": [0.3, 0.4, 0.5, 0.6], "polyak_val_acc": [0.2] * 4})
    history.index = [1, 2, 3, 4]
    figure = analysis.snapshot_curves(searched[:1], {"run0": history})
    lines = figure.axes[0].lines
    curve, marks, polyak = lines
    assert list(marks.get_xdata()) == [2, 4]
    assert list(marks.get_ydata()) == pytest.approx([40.0, 60.0])
    assert polyak.get_linestyle() == "--"


def test_relative_store_paths_fall_back_to_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert analysis.store_location("runs/x") == str(analysis.ROOT / "runs" / "x")
    assert analysis.store_location("http://host:5000") == "http://host:5000"
    (tmp_path / "here").mkdir()
    assert analysis.store_location("here") == "here"
