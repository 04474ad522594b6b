"""``khadem-nb dashboard``: check the address and the token, open the queue, then serve.

Everything that can be wrong is found before the first request: a bad queue URL (the queue is
opened first), a non-loopback address without ``--token``, and a port that cannot be bound
(the socket is bound here and handed to uvicorn).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import secrets
import socket
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import limits
from ..errors import ConfigError
from ..manager import QueueManager
from .overview import Overview

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
HOST_NAME = re.compile(r"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:\d{1,5})?\Z")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``ConfigError`` naming the address if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        reason = "is in use by another program" if in_use else f"cannot be used ({exc.strerror or exc})"
        raise ConfigError(f"port {port} on {host} {reason}; choose another with --port") from None
    sock.setblocking(False)
    return sock


def check_access(host: str, token: str | None) -> str:
    """The token to use: the one given, or a new one on loopback; refuse other addresses
    without one (anyone who can reach the port could act on the queue)."""
    if token is not None and len(token) < 8:
        raise ConfigError("--token must be at least 8 characters")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines: give --token (at least 8 "
                          "characters) so that only its holders can read the queue and act on it")
    return token or secrets.token_urlsafe(18)


async def serve(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                out: TextIO = sys.stdout, allowed: Sequence[str] = (), read_token: str | None = None) -> None:
    """Serve the dashboard of the queue at ``url`` until cancelled (Ctrl-C); ``allowed``: more
    host names (``--allowed-host``) it answers to, beside the address it is bound to;
    ``read_token`` (``--read-token``): a token that reads and never acts."""
    try:
        import uvicorn

        from .app import allowed_hosts, create_app
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs its extra ({exc.name} is missing): "
                          'pip install "khadem_nb[dashboard]"') from None

    made = token is None
    token = check_access(host, token)
    check_read_token(read_token, token)
    port = limits.count(port, "--port")
    extra = [check_host_name(name) for name in allowed]
    manager = await QueueManager(url).init()
    try:
        sock = bind(host, port)
        app = create_app(manager, token, private_reads=not is_loopback(host),
                         hosts=allowed_hosts(host, port, extra), read_token=read_token)
        shown = f"[{host}]" if ":" in host else host
        # a token given by its owner is not echoed (terminals and CI logs keep what is printed)
        told = f"token for actions: {token}" if made else "token for actions: the one given with --token"
        print(f"khadem_nb dashboard for {manager.settings.redacted_url()} at http://{shown}:{port}/\n{told}",
              file=out, flush=True)
        await warm(app.state.dashboard.overview)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        await manager.close()


async def warm(overview: Overview) -> None:
    """Compute the overview once before the first page asks: its first reading includes the
    queue names, a scan of every record in SQL (hundreds of milliseconds with a million)."""
    try:
        await overview.read()
    except Exception as exc:  # the storage is away: the pages say so when they ask
        logger.warning("the dashboard could not read its queue yet: %s", exc)


def check_read_token(read_token: str | None, token: str) -> None:
    """A ``--read-token``: at least 8 characters, and not the admin token."""
    if read_token is None:
        return
    if len(read_token) < 8:
        raise ConfigError("--read-token must be at least 8 characters")
    if read_token == token:
        raise ConfigError("--read-token must differ from --token: one reads, the other acts")


def check_host_name(name: str) -> str:
    """An ``--allowed-host`` value: a host name or address, with an optional port."""
    if not isinstance(name, str) or not HOST_NAME.match(name):
        raise ConfigError(f"--allowed-host {name!r} is not a host name (letters, digits, '-' and '.', "
                          "or an address in brackets, with an optional :port)")
    return name.lower()


def run(url: str, host: str, port: int, token: str | None, allowed: Sequence[str] = (),
        read_token: str | None = None) -> None:
    asyncio.run(serve(url, host, port, token, allowed=allowed, read_token=read_token))
