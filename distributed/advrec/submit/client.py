"""Ray's job server, seen from advrec: submit a job spec, follow a job, list, stop.

Everything goes through Ray's own ``JobSubmissionClient`` (the job server runs in the head node's
dashboard, port 8265 by default). The address is ``--address``, else ``RAY_API_SERVER_ADDRESS``
or an ``http(s)://`` ``RAY_ADDRESS``, else ``http://127.0.0.1:8265`` (a local head, or a port
forwarded to one). With token authentication (on by default in ray 2.60) the client sends the
token Ray finds: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, with
``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Any

import requests
from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from advrec import io
from advrec.errors import AdvrecError
from advrec.submit.spec import Job

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
CONNECT_TIMEOUT_S = 5.0
"""How long an unreachable job server may take to say so."""


class JobServerError(RuntimeError):
    """The job server answered other than 200 (Ray's client raises a bare RuntimeError, as a
    bug would: `_JobClient` raises this instead, so only the server's answers become one line)."""


class _JobClient(JobSubmissionClient):
    """Ray's job client, its answers other than 200 raised as `JobServerError`. Every request
    method of Ray's client reports those through ``_raise_error`` (tests/test_jobs.py fails
    loudly if a Ray upgrade stops calling it: an unknown job would no longer be one line)."""

    def _raise_error(self, r: requests.Response) -> None:
        raise JobServerError(f"Request failed with status code {r.status_code}: {r.text}.")


RAY_ERRORS = (JobServerError, ConnectionError, requests.RequestException, AuthenticationError)
"""What Ray's job client raises: `JobServerError` for an answer other than 200,
AuthenticationError for a missing or wrong token, the others when the server cannot be
reached."""
OUTPUT_KEY = "advrec_output"
"""The job metadata key holding where its outputs go."""


def job_server(address: str | None) -> str:
    """The job server's URL: ``address``, else Ray's environment, else a local head."""
    env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    address = address or (env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS)
    return address if "://" in address else f"http://{address}"


def connect_jobs(address: str | None) -> tuple[JobSubmissionClient, str]:
    """A client of the job server at ``address`` (see `job_server`); one clear error, within
    seconds, when nothing answers there or it refuses this client's token."""
    url = job_server(address).rstrip("/")
    try:  # Ray's client has no timeout: an unroutable address would hang it for minutes
        requests.get(f"{url}/api/healthz", timeout=CONNECT_TIMEOUT_S)
    except requests.RequestException:
        raise AdvrecError(f"{url}: no Ray job server answers there (start a head with `ray start "
                          "--head --dashboard-host 127.0.0.1`, forward a cluster's port 8265, or "
                          "pass --address)") from None
    try:
        return _JobClient(url), url
    # the constructor's version check raises a bare RuntimeError (a 404, a Ray too old); this
    # call runs Ray's code only, so here that is the server's answer
    except (*RAY_ERRORS, RuntimeError) as exc:
        raise AdvrecError(f"{url}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def new_submission_id(job: Job) -> str:
    """``<spec name>-<UTC time>-<random>``: sortable, and names the outputs' directory."""
    return f"{job.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def submit(client: JobSubmissionClient, job: Job) -> str:
    """Write the job's run config to its storage and submit the job; returns its id. If Ray
    refuses the job, the config written for it is removed again."""
    submission_id = new_submission_id(job)
    # advrec's own part outside the try: its errors are not the server's
    request = {"entrypoint": job.entrypoint(submission_id), "submission_id": submission_id,
               "metadata": {OUTPUT_KEY: job.output_url(submission_id), "advrec_spec": job.name},
               **job.submit_kwargs()}
    job.write_config(submission_id)
    try:
        client.submit_job(**request)
    except RAY_ERRORS as exc:
        fs, path = io.filesystem(job.config_url(submission_id))
        fs.rm(path)
        raise AdvrecError(f"{job.name}: the job server refused the job: {_first_line(exc)}") from None
    return submission_id


def _call(what: str, fn: Any, *args: Any) -> Any:
    """Ray's client call ``fn(*args)``, its errors (an unknown job is a 404) as one line."""
    try:
        return fn(*args)
    except RAY_ERRORS as exc:
        text = _first_line(exc)
        if "404" in text or "does not exist" in text:
            raise AdvrecError(f"{what}: no such job on this server") from None
        raise AdvrecError(f"{what}: {text}") from None


def follow(client: JobSubmissionClient, submission_id: str) -> JobStatus:
    """Print the job's logs as they come until it ends; returns its final status."""
    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    # the log stream closes when the job ends; its status may take a moment to be final
    while not (status := _call(submission_id, client.get_job_status, submission_id)).is_terminal():
        time.sleep(0.5)
    return status


def exit_code(status: str) -> int:
    """The exit code a job's status gives `advrec`: 1 once it failed or was stopped, else 0."""
    return 1 if status in ("FAILED", "STOPPED") else 0


def _info_row(info: Any) -> dict[str, Any]:
    """A job's id, status, message, times, output and entrypoint from Ray's JobDetails."""
    return {"id": info.submission_id or info.job_id, "status": str(info.status.value),
            "message": info.message or "", "started": _when(info.start_time),
            "ended": _when(info.end_time), "output": (info.metadata or {}).get(OUTPUT_KEY, ""),
            "entrypoint": info.entrypoint}


def job_rows(client: JobSubmissionClient) -> list[dict[str, Any]]:
    """Every job the server knows, oldest first (`_info_row`)."""
    return [_info_row(info) for info in
            sorted(_call("jobs", client.list_jobs), key=lambda j: j.start_time or 0)]


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else ""


def job_info(client: JobSubmissionClient, submission_id: str) -> dict[str, Any]:
    """One job's `_info_row`; an unknown id is an error."""
    return _info_row(_call(submission_id, client.get_job_info, submission_id))
