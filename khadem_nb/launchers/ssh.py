"""``on="ssh://[user@]host[:port]"``: workers on another machine, over SSH (asyncssh).

One connection per launch carries one session per worker. Each session runs a small Python
program on the remote side (``REMOTE``, run by the remote Python: ``python=`` or ``python3`` on
the remote PATH, after the launch's setup command) which reads the worker's settings from the
session's first input line (the secret of a queue that ships code included: it never appears on
a command line, and sshd passes no environment by default), starts ``khadem-nb worker`` with its
output in ``~/.cache/khadem_nb/workers/<name>.log`` and copies that output back. When the
session's input ends (``stop()``, the launching process exiting, the connection dropping) it
stops the worker gracefully, unless the launch was ``detach``-ed: a detached worker outlives the
session, which ends once the worker has registered.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, LaunchError
from .handle import LaunchedWorker
from .spec import LaunchSpec, new_name

CONNECT_TIMEOUT_S = 30.0
REMOTE_PYTHON = "python3"

#: run by the remote Python; reads {"name", "args", "env", "detach", "grace"} as its first line
REMOTE = r"""
import json, os, signal, subprocess, sys, threading, time
spec = json.loads(sys.stdin.readline())
folder = os.path.expanduser("~/.cache/khadem_nb/workers")
os.makedirs(folder, exist_ok=True)
path = os.path.join(folder, spec["name"] + ".log")
env = dict(os.environ)
env.update(spec["env"])
with open(path, "wb") as log:
    child = subprocess.Popen([sys.executable] + spec["args"], env=env, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print("worker %s: pid %d, log %s" % (spec["name"], child.pid, path), flush=True)

def session_ended():
    sys.stdin.read()
    if spec["detach"]:
        os._exit(0)
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(spec["grace"] + 10)
    except subprocess.TimeoutExpired:
        child.kill()

threading.Thread(target=session_ended, daemon=True).start()
copying = True
with open(path, "rb") as output:
    while True:
        ended = child.poll() is not None
        chunk = output.read()
        if chunk and copying:
            try:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            except OSError:
                copying = False
        if ended:
            break
        time.sleep(0.2)
sys.exit(child.returncode)
"""


def parse_target(on: str) -> tuple[str | None, str, int]:
    """``ssh://[user@]host[:port]`` as (user, host, port)."""
    parts = urlsplit(on)
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError(f"{on!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"an SSH launcher is named ssh://[user@]host[:port], got {on!r}")
    return parts.username, parts.hostname, port


def load_asyncssh() -> Any:
    try:
        with warnings.catch_warnings():  # its DSA support warns at import; DSA keys are not used here
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError:
        raise ConfigError('on="ssh://..." needs asyncssh: pip install "khadem_nb[ssh]"') from None
    return asyncssh


class SshWorker(LaunchedWorker):
    launcher = "ssh"

    def __init__(self, name: str, host: str, detach: bool, session: _Session, process: Any) -> None:
        super().__init__(name, host, detach)
        self.session = session
        self.process = process
        self.ended = False
        self.released = False  # a detached worker's session ended once it registered
        self.copier = asyncio.get_running_loop().create_task(self._copy_output())

    def current_state(self) -> str:
        """``running`` while its session lasts, and for a detached worker after it (its entry
        among the queue's workers says more)."""
        return "running" if self.released or not self.ended else "gone"

    def exit_status(self) -> int | None:
        status = self.process.exit_status
        return status if isinstance(status, int) else None

    async def _copy_output(self) -> None:
        try:
            async for line in self.process.stdout:
                self.output.append(line.rstrip("\n"))
        except Exception as exc:  # the connection dropped: the worker stops with its session
            self.output.append(f"(connection lost: {exc})")
        finally:
            self.ended = True
            self.session.done(self)

    async def registered(self) -> None:
        """A detached worker has registered: end its session, it runs on without it."""
        if self.detach:
            self.released = True
            self.process.stdin.write_eof()
            self.session.done(self)

    async def terminate(self, grace: float = 30.0) -> None:
        if self.ended:
            return
        if self.detach:
            raise LaunchError(f"worker {self.name} was detached: retire it (q.retire({self.name!r}))")
        self.process.stdin.write_eof()  # the remote side stops the worker gracefully
        try:
            await asyncio.wait_for(asyncio.shield(self.copier), grace + 15)
        except TimeoutError:
            self.process.close()
            self.session.done(self)


class _Session:
    """One SSH connection and the workers it carries; closed when the last has ended."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.users: set[str] = set()

    def done(self, worker: SshWorker) -> None:
        self.users.discard(worker.name)
        if not self.users:
            self.connection.close()


def remote_command(spec: LaunchSpec) -> str:
    python = shlex.quote(spec.python or REMOTE_PYTHON)
    command = f"exec {python} -u -c {shlex.quote(REMOTE)}"
    return f"{spec.setup} && {command}" if spec.setup else command


async def start_ssh(spec: LaunchSpec, n: int, on: str, options: Mapping[str, Any] | None = None,
                    connect_timeout: float = CONNECT_TIMEOUT_S) -> list[SshWorker]:
    """Connect to the host of ``on`` and start ``n`` workers there (not waiting for them to
    register). ``options``: keyword arguments of ``asyncssh.connect`` (``client_keys``,
    ``known_hosts``, ``config``...)."""
    user, host, port = parse_target(on)
    asyncssh = load_asyncssh()
    extra = dict(options or {})
    if user is not None:
        extra["username"] = user
    try:
        connection = await asyncio.wait_for(asyncssh.connect(host, port=port, **extra), connect_timeout)
    except TypeError as exc:
        raise ConfigError(f"ssh_options: {exc}") from None
    except TimeoutError:
        raise LaunchError(f"ssh {host}:{port}: no answer within {connect_timeout:g}s") from None
    except (OSError, asyncssh.Error) as exc:
        raise LaunchError(f"ssh {host}:{port}: {_reason(exc)}") from None
    session = _Session(connection)
    workers = []
    try:
        for _ in range(n):
            name = new_name(host, "ssh")
            process = await connection.create_process(remote_command(spec), stderr=asyncssh.STDOUT)
            settings = {"name": name, "args": spec.arguments(), "detach": spec.detach,
                        "env": spec.environment(name, "ssh"), "grace": spec.grace_s}
            process.stdin.write(json.dumps(settings) + "\n")
            session.users.add(name)
            workers.append(SshWorker(name, host, spec.detach, session, process))
    except (OSError, asyncssh.Error) as exc:
        connection.close()
        raise LaunchError(f"ssh {host}:{port}: could not start a worker: {_reason(exc)}") from None
    return workers


def _reason(exc: BaseException) -> str:
    reason = str(exc) if isinstance(exc, OSError) else (getattr(exc, "reason", None) or str(exc))
    return f"{type(exc).__name__}: {reason}"
