"""A real S3 API for the artifact store's tests: moto's server (``moto[server]``) started on a
loopback port for the test session, with s3fs as the client. Without moto or s3fs the tests
that need it skip with why, unless KHADEM_REQUIRE_S3=1 (which ``.ci/run`` sets)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import missing

KEYS = {"AWS_ACCESS_KEY_ID": "khadem-test", "AWS_SECRET_ACCESS_KEY": "khadem-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    @property
    def options(self) -> dict[str, Any]:
        """fsspec options for s3fs: this endpoint and the test keys."""
        return {"endpoint_url": self.endpoint, "key": KEYS["AWS_ACCESS_KEY_ID"],
                "secret": KEYS["AWS_SECRET_ACCESS_KEY"]}

    @property
    def env(self) -> dict[str, str]:
        """The same as environment variables, for worker processes (botocore reads them)."""
        return {**KEYS, "AWS_ENDPOINT_URL": self.endpoint}

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_command() -> list[str] | None:
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        return None
    binary = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    return [binary] if os.path.exists(binary) else [sys.executable, "-m", "moto.server"]


@contextlib.contextmanager
def moto_server(bucket: str = "khadem-test") -> Iterator[tuple[S3, subprocess.Popen[bytes]]]:
    """A moto S3 server on a free loopback port with ``bucket`` made, and its process."""
    command = _moto_command()
    if command is None:
        missing('moto[server] and s3fs are not installed (pip install -e ".[dev]")', "KHADEM_REQUIRE_S3")
    assert command is not None
    port = _free_port()
    proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, **KEYS})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    missing(f"moto's S3 server did not start on port {port}", "KHADEM_REQUIRE_S3")
                time.sleep(0.1)
        import s3fs

        server = S3(endpoint, bucket)
        s3fs.S3FileSystem(**server.options).mkdir(server.bucket)
        yield server, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    with moto_server() as (server, _):
        yield server
