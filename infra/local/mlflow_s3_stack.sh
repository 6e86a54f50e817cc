#!/usr/bin/env bash
# A local MLflow tracking server whose artifacts go to S3, for development and tests:
# moto_server (an S3 endpoint in memory) + `mlflow server --artifacts-destination s3://...`,
# both on 127.0.0.1, on free ports. Clients talk to MLflow only (proxied artifacts), so they
# need no AWS credentials; the server gets moto's dummy ones.
#
#   infra/local/mlflow_s3_stack.sh up     start both, wait for /health, print the env
#   infra/local/mlflow_s3_stack.sh env    print the env again (eval "$(... env)")
#   infra/local/mlflow_s3_stack.sh down   stop both (and every worker they forked)
#
# Settings (environment): MLFLOW_STACK_DIR (state: PIDs, logs, env, the SQLite backend store;
# default .mlflow-stack in the current dir), MLFLOW_STACK_BUCKET (mlflow-artifacts),
# MLFLOW_STACK_PREFIX (artifacts), MLFLOW_STACK_TIMEOUT (seconds to wait for MLflow, 180),
# PYTHON (default: the project's .venv/bin/python if present, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${MLFLOW_STACK_DIR:-$PWD/.mlflow-stack}"
BUCKET="${MLFLOW_STACK_BUCKET:-mlflow-artifacts}"
PREFIX="${MLFLOW_STACK_PREFIX:-artifacts}"
TIMEOUT="${MLFLOW_STACK_TIMEOUT:-180}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
BIN="$(dirname "$PYTHON")"
tool() {  # the venv's console script if there, else PATH
  if [[ -x "$BIN/$1" ]]; then echo "$BIN/$1"; else command -v "$1"; fi
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # url seconds: poll until it answers 200
  "$PYTHON" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_group() {  # pidfile: TERM the process group the pid leads, then KILL what is left
  local pidfile="$1" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

up() {
  mkdir -p "$STATE"
  if alive "$STATE/mlflow.pid" || alive "$STATE/moto.pid"; then
    echo "already running (state in $STATE); run '$0 down' first" >&2
    exit 1
  fi
  local s3_port mlflow_port s3_url
  s3_port="$(free_port)"
  s3_url="http://127.0.0.1:$s3_port"
  # setsid: each service leads its own process group, so `down` stops it with its workers.
  setsid "$(tool moto_server)" -H 127.0.0.1 -p "$s3_port" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  if ! wait_http "$s3_url/" 30; then
    echo "moto_server did not start; log: $STATE/moto.log" >&2
    tail -n 20 "$STATE/moto.log" >&2 || true
    down; exit 1
  fi

  # moto accepts any credentials; these dummies only ever reach the local endpoint.
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
  export MLFLOW_S3_ENDPOINT_URL="$s3_url"
  "$PYTHON" - "$s3_url" "$BUCKET" <<'PY'
import sys
import boto3
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY

  mlflow_port="$(free_port)"
  # One worker and no job runner: otherwise ~10 processes and 1-2 GB (REFERENCES.md).
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$(tool mlflow)" server \
    --host 127.0.0.1 --port "$mlflow_port" \
    --backend-store-uri "sqlite:///$STATE/mlflow.db" \
    --artifacts-destination "s3://$BUCKET/$PREFIX" --serve-artifacts \
    --workers 1 >"$STATE/mlflow.log" 2>&1 &
  echo $! >"$STATE/mlflow.pid"
  if ! wait_http "http://127.0.0.1:$mlflow_port/health" "$TIMEOUT"; then
    echo "mlflow server did not answer /health within ${TIMEOUT}s; log: $STATE/mlflow.log" >&2
    tail -n 30 "$STATE/mlflow.log" >&2 || true
    down; exit 1
  fi

  cat >"$STATE/env" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
export MLFLOW_STACK_S3_ENDPOINT=$s3_url
export MLFLOW_STACK_BUCKET=$BUCKET
export MLFLOW_STACK_PREFIX=$PREFIX
EOF
  cat "$STATE/env"
}

down() {
  stop_group "$STATE/mlflow.pid"
  stop_group "$STATE/moto.pid"
  rm -f "$STATE/env"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env)
    [[ -f "$STATE/env" ]] || { echo "not running (no $STATE/env)" >&2; exit 1; }
    cat "$STATE/env"
    ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
