"""One smoke study of the demo, trained once per test session and shared read-only."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import FASHION_MNIST_SYSTEM, STUDIES
from tests.integration.study_helpers import ensemble


@pytest.fixture(scope="session")
def trained_smoke_study(tmp_path_factory):
    """Output dir of `ensemble run <demo> --smoke` (Ray storage + MLflow SQLite store)."""
    if not FASHION_MNIST_SYSTEM.is_dir():
        pytest.skip("needs the Debian package dataset-fashion-mnist (make test installs it)")
    out = tmp_path_factory.mktemp("smoke-study") / "fashion-mnist-demo-smoke"
    result = ensemble("run", STUDIES / "fashion_mnist_demo.yaml", "--smoke", "--output", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture
def smoke_study_copy(trained_smoke_study, tmp_path):
    """A private copy for tests that write into the study dir (reports, ensemble runs)."""
    target = tmp_path / trained_smoke_study.name
    shutil.copytree(trained_smoke_study, target)
    return target
