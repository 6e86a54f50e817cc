"""Errors of the data package (no heavy imports: the CLI catches these to print a clean message)."""

from __future__ import annotations


class DataNotFoundError(RuntimeError):
    """The data set is not on this machine and could not be downloaded.

    The message lists every place that was searched and how to get the data (install the Debian
    package, point `data.dir` at a copy, or allow `data.download`).
    """


class DataSpecError(ValueError):
    """A `data.*` setting that cannot work with the data found (e.g. `data.classes` out of range).

    A ValueError, like `orchestrator.config.SpecError`; the message names the field.
    """
