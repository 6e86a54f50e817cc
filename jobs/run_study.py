"""Ray job entrypoint: run a study on the cluster this job was submitted to.

`ensemble submit` sends the resolved study as YAML in ENSEMBLE_STUDY_YAML (so CLI overrides
and --smoke arrive exactly as validated on the submitting machine); plain `ray job submit`
users pass a study file instead:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/run_study.py jobs/studies/fashion_mnist_demo.yaml --smoke
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# The job's working dir is the project root: make the package importable without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.cli import app  # noqa: E402
from orchestrator.cluster.submit import STUDY_ENV  # noqa: E402


def main(argv: list[str]) -> None:
    if STUDY_ENV in os.environ and (not argv or argv[0].startswith("-")):
        study = Path(tempfile.mkdtemp(prefix="ensemble-job-")) / "study.yaml"
        study.write_text(os.environ[STUDY_ENV])
        argv = [str(study), *argv]
    app(["run", *argv], prog_name="jobs/run_study.py")


if __name__ == "__main__":
    main(sys.argv[1:])
