"""Another machine for the SSH launcher's tests: Debian's ``openssh-server`` in a network
namespace made for the test session, with its own address on a veth pair, a host key and a
client key made by the test. It shares this machine's files (as a cluster's nodes share a
home folder), so a worker started there imports the same Python and opens the same SQLite
queue; its loopback is its own, so a queue on 127.0.0.1 here is out of its reach. Without
``ip``, root or ``sshd`` the tests skip with why, unless KHADEM_REQUIRE_SSH=1 (``.ci/run``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import missing

from khadem_nb import ConfigError

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshHost:
    address: str  # the other machine's address
    here: str  # this machine's address as the other machine sees it
    client_key: Path
    known_hosts: Path

    @property
    def target(self) -> str:
        return f"ssh://root@{self.address}"

    @property
    def options(self) -> dict[str, Any]:
        """What ``q.launch(on=target, ...)`` is given: this test's key and host key."""
        return {"ssh_options": {"client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts)}}


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the SSH tests make a network namespace, which needs root"
    if shutil.which("ip") is None or shutil.which("ssh-keygen") is None or not os.path.exists(SSHD):
        return "the SSH tests need iproute2 and Debian's openssh-server (apt-get install openssh-server)"
    try:
        from khadem_nb.launchers.ssh import load_asyncssh

        load_asyncssh()
    except ConfigError:
        return 'the SSH launcher needs asyncssh (pip install -e ".[dev]")'
    return None


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    reason = _why_not()
    if reason is not None:
        missing(reason, "KHADEM_REQUIRE_SSH")
    folder = tmp_path_factory.mktemp("ssh-host")
    tag = os.getpid() % 100_000
    namespace, outer, inner = f"khadem-ssh-{tag}", f"khs{tag}a", f"khs{tag}b"
    subnet = f"10.{200 + tag % 50}.{tag % 250}"
    here, there = f"{subnet}.1", f"{subnet}.2"
    for key in ("host_key", "client_key"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key))
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    (folder / "known_hosts").write_text(f"{there} {(folder / 'host_key.pub').read_text()}")
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {there}", "Port 22", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        f"PidFile {folder / 'sshd.pid'}", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    sshd = None
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", namespace)
        _run("ip", "addr", "add", f"{here}/24", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        for step in (["addr", "add", f"{there}/24", "dev", inner], ["link", "set", inner, "up"],
                     ["link", "set", "lo", "up"]):
            _run("ip", "netns", "exec", namespace, "ip", *step)
        with open(folder / "sshd.log", "wb") as log:
            sshd = subprocess.Popen(["ip", "netns", "exec", namespace, SSHD, "-D", "-e", "-f", str(config)],
                                    stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((there, 22), timeout=1).close()
                break
            except OSError:
                if sshd.poll() is not None or time.monotonic() > deadline:
                    said = (folder / "sshd.log").read_text()[-500:]
                    missing(f"sshd did not start: {said}", "KHADEM_REQUIRE_SSH")
                time.sleep(0.1)
        yield SshHost(there, here, folder / "client_key", folder / "known_hosts")
    except subprocess.CalledProcessError as exc:
        missing(f"could not make the SSH host's network namespace: {exc.stderr.decode().strip()}",
                "KHADEM_REQUIRE_SSH")
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
