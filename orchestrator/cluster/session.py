"""Connecting to Ray: a local single-machine cluster by default, or a given cluster.

An address that does not answer fails in seconds with a clear message (a plain `ray.init`
would wait much longer before giving up), before any training is scheduled.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import ray

CONNECT_TIMEOUT_S = 5.0
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001


class ClusterUnreachableError(RuntimeError):
    pass


def _probe(address: str) -> None:
    """TCP-connect to the address's head (GCS or Ray client port)."""
    if address == "auto":
        return  # resolved by ray from the local node's files
    url = urlsplit(address if "://" in address else f"tcp://{address}")
    if url.scheme in ("http", "https"):
        raise ClusterUnreachableError(
            f"--address {address} is a dashboard (jobs) address: `ensemble run` connects to the "
            f"head's GCS (HOST:6379) or Ray client (ray://HOST:10001); use `ensemble submit` for "
            f"http://HOST:8265"
        )
    host = url.hostname or "127.0.0.1"
    port = url.port or (DEFAULT_CLIENT_PORT if url.scheme == "ray" else DEFAULT_GCS_PORT)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(
            f"Ray cluster at {address} does not answer ({host}:{port}: {exc.strerror or exc}); "
            "is the head running (`ray start --head`), and is the address right?"
        ) from None


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """Join the cluster at `address` (or RAY_ADDRESS); with neither, start a local Ray.

    Returns a description of where the study runs.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "the Ray cluster this process is already connected to"
    if address:
        _probe(address)
        ray.init(address=address, log_to_driver=True)
        return f"Ray cluster at {address}"
    # Local single-machine mode, sized to the machine. Worker logs stay in Ray's log files:
    # the terminal shows the compact progress view instead.
    # address="local": a new local Ray even when `ray start` left one running on this machine
    # (a bare ray.init() would join that one and refuse num_cpus).
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        log_to_driver=False,
        include_dashboard=False,
    )
    return f"local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
