"""`ensemble ui`: the MLflow UI for a study's store, on 127.0.0.1 only.

A study dir (or SQLite URI) gets its own `mlflow server` process: one worker, artifacts
served by the server (runs of an embedded store keep file: artifact URIs the server reads in
place), and MLflow's job runner off - otherwise the server starts ~10 processes and takes
1-2 GB (REFERENCES.md). A tracking server URI already has its UI: it is printed, not served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestrator.tracking.errors import TrackingError
from orchestrator.tracking.reader import resolve_store
from orchestrator.tracking.scrub import scrub_text
from orchestrator.tracking.uri import ARTIFACTS_DIR, sqlite_path

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 120.0  # 10-40 s on 2 loaded CPUs (REFERENCES.md)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_command(store_uri: str, port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store_uri,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--serve-artifacts",
    ]
    if store_uri.startswith("sqlite:///"):
        # Where experiments created from the UI put artifacts: beside the DB, as a study does.
        command += ["--artifacts-destination", str(sqlite_path(store_uri).parent / ARTIFACTS_DIR)]
    return command


def server_env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class UiServer:
    url: str
    process: subprocess.Popen | None  # None: an existing server, nothing to stop

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its workers (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass


def start_ui(
    store: str | Path,
    port: int = DEFAULT_PORT,
    *,
    timeout: float = START_TIMEOUT_S,
    log_file: str | Path | None = None,
) -> UiServer:
    """Start a UI server for `store` (study dir, .db file or URI) and wait until it answers."""
    uri = resolve_store(store)
    if uri.startswith(("http://", "https://")):
        return UiServer(scrub_text(uri.rstrip("/")), None)
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    if healthy(url, timeout=0.5):
        raise TrackingError(f"port {port} is taken by another server ({url}); pick --port")
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        # Its own session: stop() ends the server and the workers it forks, nothing else.
        process = subprocess.Popen(
            server_command(uri, port),
            env=server_env(),
            stdout=out,
            stderr=subprocess.STDOUT if log_file else None,
            start_new_session=True,
        )
    finally:
        if log_file:
            out.close()  # the child holds its own copy
    server = UiServer(url, process)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TrackingError(
                    f"the MLflow UI server for {scrub_text(uri)} exited with code "
                    f"{process.returncode}"
                )
            if healthy(url):
                return server
            time.sleep(0.5)
        raise TrackingError(
            f"the MLflow UI server did not answer {url}/health within {timeout:.0f} s"
        )
    except BaseException:
        server.stop()  # also on Ctrl-C/SIGTERM while waiting: never leave it orphaned
        raise
