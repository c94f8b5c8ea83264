"""A real Ray head on this machine with its job server, for the job tests and the submit benchmark.

``ray start --head`` on free ports of 127.0.0.1 (GCS, dashboard and job server, Ray Client, the
dashboard agent), its session under a directory of your choice, with token authentication on and
the token in a file of that directory (``RAY_AUTH_TOKEN_PATH``). Jobs find ``advrec`` on the PATH
because this Python's ``bin`` directory leads it. Stopping it stops only its own processes
(``ray stop`` would stop every Ray instance on the machine).

    with local_head(tmp_dir, num_cpus=2) as head:
        subprocess.run(["advrec", "submit", spec, "--address", head.url], env=head.client_env())
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from advrec.errors import AdvrecError
from advrec.ports import free_ports


@dataclass(frozen=True)
class Head:
    """A running head: its job server's URL and what a client needs to be let in."""
    url: str
    token_path: Path

    def client_env(self) -> dict[str, str]:
        """This process's environment plus the head's token, for a client subprocess."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}


def _stop(session: str, timeout_s: float = 10.0) -> None:
    """Terminate every process whose command line names ``session`` (the head's directory)."""
    procs = [p for p in psutil.process_iter(["cmdline"])
             if any(session in arg for arg in (p.info["cmdline"] or []))]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@contextlib.contextmanager
def local_head(directory: Path, num_cpus: int, env: dict[str, str] | None = None,
               timeout_s: float = 60.0) -> Iterator[Head]:
    """Run a Ray head with ``num_cpus`` logical CPUs, its session under ``directory`` (keep the
    path short: Ray's socket paths must fit 107 bytes), until the block ends; yields it once
    its job server answers. ``env`` adds to the environment of the head (and so of its jobs)."""
    directory.mkdir(parents=True, exist_ok=True)
    token = directory / "auth_token"
    token.write_text(secrets.token_hex(32))
    gcs, dashboard, client, agent = free_ports(4)
    url = f"http://127.0.0.1:{dashboard}"
    head_env = {**os.environ, **(env or {}),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                # Ray Train's placement-group cleaner asks the State API; without this it looks
                # for "the" local instance, and finds two when another runs beside this one
                "RAY_API_SERVER_ADDRESS": url}
    head_env.pop("RAY_ADDRESS", None)
    start = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
             f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
             f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={directory}",
             "--disable-usage-stats"]
    with open(directory / "ray-start.log", "w") as log:
        done = subprocess.run(start, env=head_env, stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    try:
        if done.returncode != 0:
            raise AdvrecError(f"ray start failed; see {directory / 'ray-start.log'}")
        deadline = time.monotonic() + timeout_s
        while True:  # the job server comes up a few seconds after `ray start` returns
            try:
                if requests.get(f"{url}/api/jobs/", timeout=2,
                                headers={"Authorization": f"Bearer {token.read_text()}"}).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AdvrecError(f"Ray's job server did not answer at {url}; see {directory}")
            time.sleep(0.5)
        yield Head(url=url, token_path=token)
    finally:
        _stop(str(directory))
