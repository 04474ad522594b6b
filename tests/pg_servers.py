"""A PostgreSQL server of a test's own (initdb into a temporary folder, pg_ctl on a spare
loopback port), for tests that stop or restart the server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import missing


def bin_dir() -> str:
    """Where initdb and pg_ctl are (Debian puts them under /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found:
        return str(Path(os.path.realpath(found)).parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        missing("PostgreSQL's initdb is not installed (apt-get install postgresql)",
                "KHADEM_REQUIRE_POSTGRES")
    return str(Path(versions[-1]).parent)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnServer:
    """initdb, start, restart and stop of a throwaway server; as the postgres user when root."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        # its own folder under /tmp: the postgres user must reach it (a test's tmp_path is
        # private to root)
        self.folder = folder = Path(tempfile.mkdtemp(prefix="khadem-pg-"))
        self.data = folder / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def restart(self) -> None:
        log = str(self.folder / "log")  # without it the new server writes to our pipes
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class Bouncer:
    """PgBouncer in transaction pooling mode in front of ``target`` (a PostgreSQL URL), on a
    spare loopback port; as the postgres user when root (it refuses to run as root)."""

    def __init__(self, target: str) -> None:
        from urllib.parse import urlsplit

        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            missing("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)",
                    "KHADEM_REQUIRE_POSTGRES")
        parts = urlsplit(target)
        self.folder = folder = Path(tempfile.mkdtemp(prefix="khadem-bouncer-"))
        self.port = _free_port()
        user = parts.username or "postgres"
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        (folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {folder / 'log'}\npidfile = {folder / 'pid'}\n")
        self.url = f"postgresql://{user}@127.0.0.1:{self.port}{parts.path}"
        command = [binary, str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            for path in folder.iterdir():
                shutil.chown(path, "postgres", "postgres")
            shutil.chown(folder, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {self.process.communicate()[1][-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        shutil.rmtree(self.folder, ignore_errors=True)
