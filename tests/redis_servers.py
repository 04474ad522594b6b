"""Private redis-server processes on spare loopback ports, for outage and cluster tests."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis
from conftest import need_redis_server_binary


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_port(*, cluster: bool = False) -> int:
    """A free loopback port; for cluster nodes also its bus port (port + 10000) must be free."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster or (port + 10000 < 65536 and _free(port + 10000)):
            return port
        port = random.randint(20000, 55000)
        if _free(port) and _free(port + 10000):
            return port


class RedisServer:
    """One redis-server on 127.0.0.1, started and stopped by the test."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        need_redis_server_binary()
        self.folder = folder
        self.port = port or spare_port(cluster="--cluster-enabled" in args)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
             "--save", "", *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.AuthenticationError:
                return
            except redis.ResponseError as exc:
                if "NOAUTH" in str(exc):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
