"""Which MLflow store a study uses, and whether it can work, decided once in the driver.

- No `tracking.uri`: SQLite in the study's output dir (`<output>/mlflow.db`), artifacts beside
  it (`<output>/mlartifacts`). Always an absolute path: Ray workers run in other directories.
- `sqlite:///...`: the same, artifacts beside that DB file. Only one machine can write a SQLite
  file, so it is rejected on a multi-node cluster.
- `http(s)://...`: a tracking server (infra/mlflow); artifacts go where the server sends them
  (proxied to S3). Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, never from
  the URI: the URI is handed to every trial's config and would be stored with it.
- Other database URIs (postgresql://, mysql://) are used as given.

Pitfall (REFERENCES.md): several processes creating a fresh SQLite DB at once crash in schema
migration, so `prepare_store` creates/migrates it here, before any member starts.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from orchestrator.config import TrackingSpec
from orchestrator.tracking.errors import TrackingError
from orchestrator.tracking.scrub import has_userinfo, scrub_text

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
HEALTH_TIMEOUT_S = 5.0
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    kind: str  # "sqlite" | "server" | "database" | "other"
    artifact_location: str | None  # for experiments created here; None: the server decides

    @property
    def display(self) -> str:
        return scrub_text(self.uri)


def sqlite_uri(db_file: str | Path) -> str:
    # sqlite:/// + an absolute path gives the four slashes SQLAlchemy wants for absolute paths.
    return f"sqlite:///{Path(db_file).resolve()}"


def sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


def file_uri_path(uri: str) -> Path:
    """file:///a%20b/c -> Path('/a b/c')."""
    return Path(url2pathname(urlsplit(uri).path))


def resolve_target(tracking: TrackingSpec, output: str | Path) -> TrackingTarget:
    """The store a study logs to (see module docstring); raises TrackingError for bad URIs."""
    uri = tracking.uri
    if not uri:
        output = Path(output).resolve()
        return TrackingTarget(
            sqlite_uri(output / DB_FILE), "sqlite", (output / ARTIFACTS_DIR).as_uri()
        )
    if has_userinfo(uri):
        raise TrackingError(
            f"tracking.uri {scrub_text(uri)} carries credentials; remove them from the URI and set "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
            "environment of the driver and the workers instead"
        )
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
            raise TrackingError(
                f"tracking.uri {uri}: a SQLite store must be a file, e.g. sqlite:////abs/mlflow.db"
            )
        db = sqlite_path(uri).expanduser().resolve()  # relative to where the study is started
        return TrackingTarget(sqlite_uri(db), "sqlite", (db.parent / ARTIFACTS_DIR).as_uri())
    if scheme in SERVER_SCHEMES:
        return TrackingTarget(uri.rstrip("/"), "server", None)
    if scheme.split("+")[0] in DATABASE_SCHEMES:
        return TrackingTarget(uri, "database", None)
    if scheme in ("", "file"):
        raise TrackingError(
            f"tracking.uri {uri}: MLflow 3 no longer writes plain folder stores; leave tracking.uri "
            "unset (SQLite in the output dir), or give sqlite:////abs/path/mlflow.db or a "
            "tracking server http://HOST:5000"
        )
    return TrackingTarget(uri, "other", None)


def check_cluster(target: TrackingTarget, nodes: int) -> None:
    """A SQLite file is written by processes on one machine only."""
    if target.kind == "sqlite" and nodes > 1:
        raise TrackingError(
            f"tracking: the SQLite store {target.display} cannot be shared by a cluster of {nodes} "
            "nodes (members on other nodes could not write to it). Run an MLflow tracking server "
            "(infra/mlflow/README.md) and set tracking.uri: http://HOST:5000 in the study "
            "(or --set tracking.uri=http://HOST:5000)"
        )


def check_reachable(target: TrackingTarget, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """A tracking server must answer /health now, before any member trains."""
    if target.kind != "server":
        return
    url = f"{target.uri}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingError(
        f"MLflow tracking server {target.display} is not reachable ({reason}); start it "
        "(infra/mlflow/README.md, or infra/local/mlflow_s3_stack.sh up for development) or fix "
        "tracking.uri"
    )


def prepare_store(target: TrackingTarget) -> None:
    """Create (or migrate) the store once, here in the driver: workers then only open it."""
    if target.kind == "sqlite":
        sqlite_path(target.uri).parent.mkdir(parents=True, exist_ok=True)
        file_uri_path(target.artifact_location).mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    try:
        MlflowClient(target.uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(
            f"tracking store {target.display} cannot be opened: {scrub_text(str(exc))}"
        ) from None


def open_target(tracking: TrackingSpec, output: str | Path, nodes: int = 1) -> TrackingTarget:
    """resolve -> cluster check -> reachability -> store ready; fails before any training."""
    target = resolve_target(tracking, output)
    check_cluster(target, nodes)
    check_reachable(target)
    prepare_store(target)
    return target
