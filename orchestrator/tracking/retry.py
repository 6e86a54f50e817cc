"""Retrying MLflow writes that fail for a moment: a server restart, a proxy's 502/503, a SQLite
writer holding the lock while another member commits.

Only transient errors are retried (a bad request would fail the same way again); after the
last attempt the error is raised as `TrackingWriteError` naming what was being written, so a
snapshot is never silently dropped. MLflow's REST client already retries HTTP requests on its
own (MLFLOW_HTTP_REQUEST_MAX_RETRIES); this covers what it gives up on and SQLite locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import RestException

from orchestrator.tracking.errors import TrackingWriteError
from orchestrator.tracking.scrub import scrub_text

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 6
BASE_DELAY_S = 0.5
MAX_DELAY_S = 15.0

# Lower-case fragments of messages that mean "try again" (MLflow wraps requests' and
# SQLAlchemy's exceptions into MlflowException, so the type alone does not tell).
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "connection refused",
    "connection reset",
    "connection aborted",
    "max retries exceeded",
    "temporarily unavailable",
    "read timed out",
    "timed out",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "too many requests",
    "remote end closed connection",
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    # A server's answer (RestException) carries its HTTP status; 5xx and 429 are the server's
    # trouble, not the request's. Client-side MlflowExceptions default to "500" too, so only
    # the server's own status counts.
    if isinstance(exc, RestException):
        code = exc.get_http_status_code()
        if code == 429 or code >= 500:
            return True
    text = str(exc).lower()
    return any(fragment in text for fragment in TRANSIENT_MESSAGES)


def retry_call(
    fn: Callable[[], T],
    what: str,
    *,
    attempts: int | None = None,
    base_delay: float | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """`fn()`, retried with exponential backoff on transient errors.

    `fn` must be safe to repeat (artifact uploads overwrite; run creation searches first).
    Defaults are the module constants, read at call time (tests shorten them).
    """
    attempts = attempts or ATTEMPTS
    base_delay = BASE_DELAY_S if base_delay is None else base_delay
    sleep = sleep or time.sleep
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise TrackingWriteError(
                    f"{what}: MLflow still failing after {attempts} attempts: "
                    f"{scrub_text(first_line)}"
                ) from exc
            delay = min(MAX_DELAY_S, base_delay * 2 ** (attempt - 1))
            log.warning("%s: transient MLflow error (%s), retry in %.1fs", what, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
