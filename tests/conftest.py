"""Shared fixtures: tiny synthetic studies that train in seconds on 2 CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "jobs" / "studies"
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def synthetic_tree(**sections) -> dict:
    """A study dict for the synthetic data set and the tiny model; sections override keys."""
    tree = {
        "name": "synthetic-test",
        "data": {
            "name": "synthetic",
            "synthetic_size": 1024,
            "eval_subset": 128,
            "image_size": 12,
            "num_classes": 4,
            "channels": 1,
            "val_fraction": 0.2,
        },
        "model": {"name": "tiny"},
        "train": {"epochs": 4, "batch_size": 32, "eval_batch_size": 256, "lr": 0.1, "threads": 1},
        "schedule": {"kind": "cyclic", "cycles": 2},
        "polyak": {"kind": "ema", "decay": 0.9},
        "members": {"count": 2},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            tree.setdefault(section, {}).update(values)
        else:
            tree[section] = values
    return tree


@pytest.fixture
def synthetic_spec() -> config.StudySpec:
    return config.from_dict(synthetic_tree())


@pytest.fixture
def make_spec():
    def make(**sections) -> config.StudySpec:
        return config.from_dict(synthetic_tree(**sections))

    return make


@pytest.fixture
def demo_study() -> Path:
    return STUDIES / "fashion_mnist_demo.yaml"


requires_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM.is_dir(),
    reason="needs the Debian package dataset-fashion-mnist (make test installs it)",
)


# MLflow ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite DB: creating one costs ~5 s, copying it ~0."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


@pytest.fixture
def study_dir(tmp_path, mlflow_db_template) -> Path:
    """A study output dir whose embedded MLflow store (mlflow.db) already exists."""
    import shutil

    out = tmp_path / "study"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    return out
