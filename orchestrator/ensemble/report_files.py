"""Where a report's files go, and how each is written (atomically: never half a file).

A directory holds a report when any of its files is there. `report_dir_for` never picks a
directory with an earlier report unless told to overwrite: it picks the first free numbered
sub-directory `out_dir/report-2`, `report-3`, ... instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPORT_FILES = ("report.json", "report.md")
PLOTS_DIR = "plots"


def _has_report(path: Path) -> bool:
    return any((path / name).exists() for name in (*REPORT_FILES, PLOTS_DIR))


def report_dir_for(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Where `write_report` will write: `out_dir`, or its first free `report-N` sub-dir."""
    out = Path(out_dir)
    if overwrite or not _has_report(out):
        return out
    n = 2
    while (out / f"report-{n}").exists():
        n += 1
    return out / f"report-{n}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
