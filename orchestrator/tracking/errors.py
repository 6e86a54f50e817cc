"""Tracking errors (no mlflow import here: cluster/ catches these without loading mlflow)."""

from __future__ import annotations


class TrackingError(RuntimeError):
    """Tracking cannot be used as configured (bad URI, unreachable server, SQLite on a cluster)."""


class TrackingWriteError(TrackingError):
    """A write to MLflow still failed after retries; the member must not go on silently."""


class StudyNotFoundError(TrackingError):
    """No study run matches the name (and run) asked for in this store."""


class MissingArtifactError(TrackingError):
    """A member's run lacks an artifact the aggregator needs."""
