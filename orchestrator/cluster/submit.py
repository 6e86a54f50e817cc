"""Submitting a study as a Ray job (Ray Jobs API) and following it to the end.

The job's working dir is this project (the package and jobs/), its entrypoint
`python jobs/run_study.py`, and the resolved study travels as YAML in the job's environment,
so `--set` overrides and `--smoke` reach the cluster exactly as validated here.

Token auth (on by default for Ray >= 2.59 clusters): the token is taken from RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, the files Ray itself reads.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = "jobs/run_study.py"
STUDY_ENV = "ENSEMBLE_STUDY_YAML"
# Never uploaded: environments, outputs, caches, VCS data.
UPLOAD_EXCLUDES = [
    ".venv",
    "runs",
    ".git",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "mlruns",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# A head that has just started answers HTTP before its job agent has registered, and refuses
# jobs with "No available agent to submit job, please try again later" meanwhile.
AGENT_WAIT_S = 90.0
AGENT_NOT_READY = "No available agent"


class SubmitError(RuntimeError):
    pass


def _token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def auth_headers(token: str | None = None) -> dict[str, str]:
    """Bearer header for a token-auth cluster: explicit token, RAY_AUTH_TOKEN, or the token file."""
    token = token or os.environ.get("RAY_AUTH_TOKEN")
    if not token and _token_path().is_file():
        token = _token_path().read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_entrypoint(output: str | None) -> str:
    args = ["python", ENTRYPOINT]
    if output:
        args += ["--output", output]
    return " ".join(shlex.quote(a) for a in args)


def submission_id(spec: config.StudySpec, attempt: int) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"ensemble-{spec.name}-{attempt:03d}")


def submit_study(
    spec: config.StudySpec,
    address: str,
    *,
    output: str | None = None,
    wait: bool = True,
    token: str | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[str, str | None]:
    """Submit; returns (job id, final status or None without waiting)."""
    if not address.startswith(("http://", "https://")):
        raise SubmitError(
            f"--address {address}: a Ray job goes to the dashboard, e.g. http://HEAD:8265"
        )
    from ray.job_submission import JobStatus, JobSubmissionClient

    headers = auth_headers(token)
    try:
        client = JobSubmissionClient(address, headers=headers or None)
        existing = {j.submission_id for j in client.list_jobs()}
    except Exception as exc:  # connection refused, 401/403, bad URL: all before submitting
        raise SubmitError(f"Ray dashboard at {address} did not accept us: {exc}") from None
    attempt = 1
    while submission_id(spec, attempt) in existing:
        attempt += 1
    try:
        job_id = retry_while_agent_starts(
            lambda: client.submit_job(
                entrypoint=job_entrypoint(output),
                submission_id=submission_id(spec, attempt),
                runtime_env={
                    "working_dir": str(PROJECT_ROOT),
                    "excludes": UPLOAD_EXCLUDES,
                    "env_vars": {STUDY_ENV: config.dump_yaml(spec)},
                },
                metadata={"study": spec.name},
            ),
            echo=echo,
        )
    except Exception as exc:  # the dashboard answered but refused the job: say so, no traceback
        raise SubmitError(f"Ray dashboard at {address} refused the job: {exc}") from None
    echo(f"submitted {job_id} to {address}")
    if not wait:
        return job_id, None
    _follow_logs(client, job_id, echo)
    status = client.get_job_status(job_id)
    while status not in {JobStatus(s) for s in TERMINAL}:
        time.sleep(1)
        status = client.get_job_status(job_id)
    return job_id, str(status.value)


def retry_while_agent_starts(
    submit: Callable[[], str],
    *,
    wait_s: float = AGENT_WAIT_S,
    poll_s: float = 2.0,
    echo: Callable[[str], None] = print,
) -> str:
    """`submit()`, retried while the cluster says its job agent is not up yet (a fresh head);
    any other error, or the same one after `wait_s`, is raised."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return submit()
        except RuntimeError as exc:
            if AGENT_NOT_READY not in str(exc) or time.monotonic() >= deadline:
                raise
            if not told:
                echo("the cluster's job agent is still starting; retrying")
                told = True
            time.sleep(poll_s)


def _follow_logs(client, job_id: str, echo: Callable[[str], None]) -> None:
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            echo(chunk.rstrip("\n"))

    asyncio.run(tail())
