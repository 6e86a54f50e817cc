"""`ensemble aggregate` on a finished smoke study: report, MLflow ensemble run, served model."""

import json
import os

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import config
from orchestrator.data import load_data
from tests.integration.study_helpers import ensemble

pytestmark = [pytest.mark.slow]


def test_aggregate_reports_every_ensemble_family_with_gains(smoke_study_copy):
    result = ensemble("aggregate", smoke_study_copy, "--bn-batches", "4")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "independent/mean_softmax" in result.stdout
    report = json.loads((smoke_study_copy / "report" / "report.json").read_text())
    families = {e["family"] for e in report["ensembles"]}
    assert {"independent", "snapshot", "greedy", "polyak", "swa", "members_x_snapshots"} <= families
    for entry in report["ensembles"]:
        for key in ("test_acc", "test_nll", "test_ece"):
            assert np.isfinite(entry["metrics"][key])
        assert isinstance(entry["gain_over_mean_single"], float)
    assert len(report["members"]) == 2
    for plot in ("accuracy_vs_size.png", "snapshot_accuracy.png", "reliability.png"):
        assert (smoke_study_copy / "report" / "plots" / plot).stat().st_size > 1000

    # The ensemble run is nested under the study run and holds the report and the model.
    uri = f"sqlite:///{smoke_study_copy / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fashion-mnist-demo-smoke")
    study_run = client.search_runs([exp.experiment_id], "tags.`ensemble.role` = 'study'")[0]
    (ens_run,) = client.search_runs([exp.experiment_id], "tags.`ensemble.role` = 'ensemble'")
    assert ens_run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
    assert "independent/mean_softmax/test_acc" in ens_run.data.metrics
    assert {a.path for a in client.list_artifacts(ens_run.info.run_id)} >= {
        "report.json",
        "report.md",
        "plots",
    }

    # The best ensemble, served as a pyfunc model, predicts what the report measured.
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{ens_run.info.run_id}/best-ensemble")
    spec = config.load(smoke_study_copy / "study.yaml")
    data = load_data(spec.data)
    probs = model.predict(data.test.images.numpy())
    assert probs.shape == (len(data.test), 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    best = next(e for e in report["ensembles"] if e["name"] == report["best_ensemble"])
    served_acc = float((probs.argmax(1) == data.test.labels.numpy()).mean())
    assert served_acc == pytest.approx(best["metrics"]["test_acc"], abs=1.5 / len(data.test))

    # Aggregating again keeps the first report and adds a second ensemble run.
    again = ensemble("aggregate", smoke_study_copy, "--bn-batches", "4", "--no-log")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (smoke_study_copy / "report" / "report.json").is_file()
    assert (smoke_study_copy / "report" / "report-2" / "report.json").is_file()


def test_aggregate_rejects_a_dir_that_is_no_study(tmp_path):
    result = ensemble("aggregate", tmp_path, timeout=120)
    assert result.returncode != 0
    assert "mlflow.db" in result.stderr or "study" in result.stderr


def test_aggregate_by_name_needs_a_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = ensemble("aggregate", "no-such-study", timeout=120, env=env)
    assert result.returncode != 0 and "--store" in result.stderr
