"""A real S3-compatible server for the artifact-store tests: moto's server mode (`moto[server]`,
`python -m moto.server`) as its own process on a free port of 127.0.0.1.

moto because it installs from PyPI with the dev extra like every other test dependency (MinIO
ships as a binary download, which CI cannot fetch), speaks the S3 REST API over HTTP,
multipart uploads included, and starts in about a second. A missing package fails, never skips.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from maas.cli.up import free_port

# moto accepts any credentials; these only have to be present.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "maas-test", "AWS_SECRET_ACCESS_KEY": "maas-test-secret",
               "AWS_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a process at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_s3_server(log_dir: Path) -> S3Server:
    port = free_port()
    with (log_dir / "moto.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return S3Server(endpoint, proc)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"moto's S3 server did not start on port {port}: see {log_dir / 'moto.log'}")



def serving_bucket(tmp_path_factory: pytest.TempPathFactory, bucket: str) -> Iterator[S3Server]:
    """A module fixture's body: a server with `bucket` created, stopped at the end."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                 aws_access_key_id="k", aws_secret_access_key="s").create_bucket(Bucket=bucket)
    yield server
    server.stop()
