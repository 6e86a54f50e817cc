"""Which MLflow store a study uses, and the checks that fail a study before any training."""

import http.server
import socket
import threading
import time

import pytest
from mlflow.exceptions import MlflowException, RestException

from orchestrator.config import TrackingSpec
from orchestrator.tracking import retry
from orchestrator.tracking.errors import TrackingError, TrackingWriteError
from orchestrator.tracking.reader import resolve_store
from orchestrator.tracking.uri import (
    check_cluster,
    check_reachable,
    open_target,
    resolve_target,
)


def test_default_is_sqlite_in_the_output_dir_with_artifacts_beside_it(tmp_path):
    target = resolve_target(TrackingSpec(), tmp_path / "study")
    assert target.kind == "sqlite"
    assert target.uri == f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    assert target.uri.startswith("sqlite:////")  # absolute: workers run elsewhere
    assert target.artifact_location == (tmp_path / "study" / "mlartifacts").as_uri()


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = resolve_target(TrackingSpec(uri="sqlite:///stores/m.db"), "ignored")
    assert target.uri == f"sqlite:///{tmp_path / 'stores' / 'm.db'}"
    assert target.artifact_location == (tmp_path / "stores" / "mlartifacts").as_uri()


def test_server_uri_is_kept_and_artifacts_left_to_the_server():
    target = resolve_target(TrackingSpec(uri="http://mlflow.internal:5000/"), "out")
    assert (target.kind, target.uri, target.artifact_location) == (
        "server",
        "http://mlflow.internal:5000",
        None,
    )


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "sqlite:///:memory:"])
def test_folder_and_memory_stores_are_rejected(uri):
    with pytest.raises(TrackingError, match="tracking.uri"):
        resolve_target(TrackingSpec(uri=uri), "out")


def test_credentials_in_the_uri_are_rejected_without_echoing_them():
    with pytest.raises(TrackingError) as err:
        resolve_target(TrackingSpec(uri="https://alice:hunter2@mlflow.example:443"), "out")
    assert "hunter2" not in str(err.value)
    assert "MLFLOW_TRACKING_USERNAME" in str(err.value)


def test_sqlite_is_rejected_on_a_multi_node_cluster(tmp_path):
    sqlite = resolve_target(TrackingSpec(), tmp_path)
    check_cluster(sqlite, nodes=1)
    with pytest.raises(TrackingError) as err:
        check_cluster(sqlite, nodes=3)
    assert "3 nodes" in str(err.value) and "tracking.uri: http://" in str(err.value)
    check_cluster(resolve_target(TrackingSpec(uri="http://h:5000"), tmp_path), nodes=3)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket closes


def test_unreachable_server_fails_fast_with_a_clear_message(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        open_target(TrackingSpec(uri=uri), tmp_path)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert uri in message and "not reachable" in message and "infra/mlflow" in message


def test_reachable_server_passes_the_health_check():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        check_reachable(resolve_target(TrackingSpec(uri=uri), "out"))
    finally:
        server.shutdown()
        server.server_close()


def test_open_target_creates_the_sqlite_store_once(tmp_path):
    target = open_target(TrackingSpec(), tmp_path / "study")
    assert (tmp_path / "study" / "mlflow.db").is_file()
    assert (tmp_path / "study" / "mlartifacts").is_dir()
    assert resolve_store(tmp_path / "study") == target.uri
    assert resolve_store(tmp_path / "study" / "mlflow.db") == target.uri
    assert resolve_store("http://h:5000") == "http://h:5000"
    with pytest.raises(TrackingError, match="no MLflow store"):
        resolve_store(tmp_path)


# Retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionError("refused"), True),
        (MlflowException("(sqlite3.OperationalError) database is locked"), True),
        (MlflowException("API request to http://h/api failed: Max retries exceeded"), True),
        (RestException({"error_code": "INTERNAL_ERROR", "message": "boom"}), True),
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}), True),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), False),
        (MlflowException("Changing param values is not allowed"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors_are_told_apart(exc, transient):
    assert retry.is_transient(exc) is transient


def test_retry_recovers_from_transient_errors_and_gives_up_loudly():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection refused")
        return "ok"

    assert retry.retry_call(flaky, "x", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and sleeps == [0.5, 1.0]

    def down():
        raise MlflowException("database is locked")

    with pytest.raises(TrackingWriteError, match="snapshot 1: MLflow still failing after 4"):
        retry.retry_call(down, "snapshot 1", attempts=4, sleep=lambda s: None)

    def bad():
        calls.append(1)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError):
        retry.retry_call(bad, "x", sleep=lambda s: None)
    assert len(calls) == 1  # never retried
