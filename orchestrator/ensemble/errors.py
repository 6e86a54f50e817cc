"""Errors of the aggregator: each message names the member (and artifact) at fault."""

from __future__ import annotations


class AggregateError(ValueError):
    """Members that cannot be aggregated (none, mismatched data, a missing artifact, ...)."""


class WeightJobError(AggregateError):
    """A weight job cannot run; the message names the job and the member/snapshot at fault."""
