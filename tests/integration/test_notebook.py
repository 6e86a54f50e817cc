"""notebooks/analyze_study.ipynb: committed without outputs, and runs top to bottom (nbclient)
on a smoke study, with and without an ensemble run in its MLflow store."""

from __future__ import annotations

import sys

import nbformat
import pytest

from tests.conftest import ROOT
from tests.integration.study_helpers import ensemble, members_dir

NOTEBOOK = ROOT / "notebooks" / "analyze_study.ipynb"
STUDY = "fashion-mnist-demo-smoke"
KERNEL_PYTHON = "kernel python: "


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.id} has outputs: strip them before committing"
        assert cell.execution_count is None, f"cell {cell.id} has an execution count"
    # The study is chosen in the first code cell, overridable from the environment.
    assert "ENSEMBLE_STUDY" in code[0].source and "ENSEMBLE_STORE" in code[0].source


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A "python3" kernel spec running this interpreter, found before any user-wide one."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter-prefix"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return "python3"


def execute(study_dir, kernel: str, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook as a user would (cwd notebooks/), the study set by environment."""
    from nbclient import NotebookClient

    monkeypatch.setenv("ENSEMBLE_STORE", str(study_dir))
    monkeypatch.setenv("ENSEMBLE_STUDY", STUDY)
    monkeypatch.delenv("ENSEMBLE_RUN", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(f"import sys\nprint({KERNEL_PYTHON!r} + sys.executable)")
    )
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=600,
        allow_errors=False,  # a failing cell raises CellExecutionError with its traceback
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    return nb


def outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", ""))
    return "\n".join(parts)


def check_common(nb, study_dir) -> str:
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = text_of(nb)
    assert KERNEL_PYTHON + sys.executable in text, "the kernel is not this venv's python"
    # Members table: both members of the smoke study, by key.
    keys = sorted(p.name for p in members_dir(study_dir).iterdir())
    assert len(keys) == 2
    table = next(
        o.data["text/html"]
        for o in outputs(nb)
        if "data" in o and "text/html" in o.data and "polyak_test_acc" in o.data["text/html"]
    )
    assert all(key in table for key in keys)
    # Snapshot curves, accuracy vs size, reliability: three figures at least.
    figures = [o for o in outputs(nb) if "data" in o and "image/png" in o.data]
    assert len(figures) >= 3
    assert "independent/mean_softmax" in text  # size curves and calibration tables
    assert "best ensemble" in text
    assert "searched nothing" in text  # the demo has no search space
    return text


@pytest.mark.slow
def test_notebook_runs_on_an_aggregated_smoke_study(smoke_study_copy, venv_kernel, monkeypatch):
    result = ensemble("aggregate", smoke_study_copy, "--bn-batches", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    nb = execute(smoke_study_copy, venv_kernel, monkeypatch)
    text = check_common(nb, smoke_study_copy)
    assert f"report.json of ensemble run {STUDY}/run-001/ensemble-1" in text
    assert "swa/" in text  # weight ensembles come from the saved report


@pytest.mark.slow
def test_notebook_aggregates_in_process_without_an_ensemble_run(
    smoke_study_copy, venv_kernel, monkeypatch
):
    nb = execute(smoke_study_copy, venv_kernel, monkeypatch)
    text = check_common(nb, smoke_study_copy)
    assert "no ensemble run yet" in text
    assert "swa/" not in text  # weight ensembles off in the in-process aggregation
