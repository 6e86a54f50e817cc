"""Running `ensemble run` as a user does, and reading a study's Ray storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, synthetic_tree

ENSEMBLE = [sys.executable, "-m", "orchestrator.cli"]


def write_study(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(synthetic_tree(**sections)))
    return path


def ensemble(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENSEMBLE, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def members_dir(output: Path, run: str = "run-001") -> Path:
    return output / "ray" / run / "members"


def snapshot_dirs(member: Path) -> list[Path]:
    return sorted(p for p in member.glob("snapshot_*") if p.is_dir())
