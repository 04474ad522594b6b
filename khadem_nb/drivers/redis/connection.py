"""The Redis driver's connections: opening them, raw script calls, and outages.

The only module that uses redis-py below its public API (packed commands, a connection held out
of the pool, the socket reader's end-of-stream flag), so a redis-py upgrade is checked here:
``REDIS_PY_RANGE`` is the range pinned in ``pyproject.toml``, and the test suite runs against
the installed release.

- A script call goes out as one packed command whose head (``EVALSHA``, the script's sha, the
  key count and the queue's keys) is encoded once per script and queue; only the arguments are
  encoded per call.
- Script calls use one connection held out of the pool while it is free, and a pooled one when
  calls overlap. On Cluster, redis-py routes each call to its node instead.
- A lost script cache (a restart, a failover) is loaded again on the same connection.
- A lost connection becomes ``DriverUnavailableError`` naming the server, logged once per
  outage, and every idle connection is closed so that none is reused after the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar

from ...config import QueueSettings
from ...errors import CorruptQueueError, DriverError, DriverUnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: the redis-py releases this module is written against (pinned in pyproject.toml)
REDIS_PY_RANGE = (">=5.3", "<9")
MIN_REDIS = (6, 2)  # LPOP with a count (reserve.lua)
SCRIPTS = ("enqueue", "reserve", "settle", "heartbeat", "meta", "requeue", "fetch", "leave", "statuses",
           "cancel", "forget", "lanes", "unlock")
#: a raw command for :meth:`RedisConnection.send_in_order`: packed bytes, or its arguments
Outgoing = bytes | tuple[Any, ...]
_persistence_warned: set[str] = set()


def script_source(name: str) -> str:
    """A script as sent to Redis: ``_common.lua`` followed by the script itself."""
    folder = resources.files(__package__) / "lua"
    return (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class RedisConnection:
    """A client (standalone or Cluster), its scripts and a held connection, for one driver."""

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.url = settings.redacted_url()
        self.client: Any = None
        self.cluster = False
        self._scripts: dict[str, Any] = {}
        self._heads: dict[tuple[str, str, str], bytes] = {}  # see _head
        self._held: Any = None  # kept out of the pool for script calls (see _eval)
        self._held_busy = False
        self._outage = False

    # -- opening and closing -----------------------------------------------------------------
    def _client_options(self) -> dict[str, Any]:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        # No silent retries inside redis-py: outages are handled here, with bounded waits.
        return {"socket_connect_timeout": s.connect_timeout_s,
                "socket_timeout": max(10.0, 2 * s.connect_timeout_s),
                "retry": Retry(NoBackoff(), 0), "health_check_interval": 30}

    async def open(self) -> None:
        import redis.asyncio as aioredis

        s = self.settings
        options = self._client_options()
        if s.url and s.url.startswith("rediss://"):
            options["ssl"] = True
        client: Any = aioredis.Redis(host=s.host, port=s.port, db=s.db, username=s.username,
                                     password=s.password, **options)
        info = await self._server_info(client)
        version = str(info.get("redis_version", ""))
        if not server_is_recent_enough(version):
            await client.aclose()
            raise DriverError(f"Redis at {self.url} is version {version}; the Redis "
                              f"driver needs {'.'.join(map(str, MIN_REDIS))} or newer (its scripts "
                              "use LPOP with a count)")
        if info.get("cluster_enabled"):
            await client.aclose()
            options.pop("health_check_interval", None)
            client = aioredis.RedisCluster(host=s.host, port=s.port, username=s.username,
                                           password=s.password, **options)
            await client.initialize()
            self.cluster = True
        self.client = client
        self._scripts = {name: client.register_script(script_source(name)) for name in SCRIPTS}
        if not self.cluster:
            self._held = await client.connection_pool.get_connection()
        await self._warn_without_persistence()

    async def _server_info(self, client: Any) -> dict[str, Any]:
        """PING and INFO; a refusal or an unreachable server is a clear error naming it."""
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        s = self.settings
        try:
            await asyncio.wait_for(client.ping(), s.connect_timeout_s + 1)
            return {**await client.info("server"), **await client.info("cluster")}
        except AuthenticationError as exc:
            await client.aclose()
            raise DriverError(f"Redis at {self.url} refused the credentials: {exc}") from None
        except ResponseError as exc:
            await client.aclose()
            raise DriverError(f"Redis at {self.url} refused the connection: {exc}") from None
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise DriverUnavailableError(f"cannot reach Redis at {self.url} within "
                                         f"{s.connect_timeout_s:g}s: {exc}") from None

    async def _warn_without_persistence(self) -> None:
        from redis.exceptions import RedisError

        if self.url in _persistence_warned:
            return
        _persistence_warned.add(self.url)
        try:
            config = await self.client.config_get("appendonly")
        except RedisError:  # CONFIG may be renamed or disabled: nothing to check then
            return
        values = {k.decode() if isinstance(k, bytes) else k: v for k, v in config.items()}
        if values.get("appendonly") in (b"no", "no"):
            logger.warning("Redis at %s has appendonly=no: queued jobs may be lost if the server "
                           "restarts (enable AOF for a durable queue)", self.url)

    async def close(self) -> None:
        if self.client is None:
            return
        if self._held is not None:
            await self.client.connection_pool.release(self._held)
            self._held = None
        await self.client.aclose()
        self.client = None

    # -- calls -------------------------------------------------------------------------------
    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run one command; a lost connection becomes DriverUnavailableError naming the server."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self.client is None:
            raise DriverError(f"the Redis queue at {self.url} is closed")
        try:
            value = await make()
        except ResponseError as exc:
            raise refusal(self.url, exc) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if not self._outage:
                logger.error("lost Redis at %s: %s", self.url, exc)
            self._outage = True
            await self._drop_idle_connections()
            raise DriverUnavailableError(f"Redis at {self.url} is unreachable: {exc}") from None
        if self._outage:
            logger.warning("Redis at %s is back", self.url)
            self._outage = False
        return value

    async def _drop_idle_connections(self) -> None:
        """Close every idle connection, the held one included, so none is used again after the
        server comes back (the pool's own liveness check lets a connection to a killed server
        through)."""
        pool = getattr(self.client, "connection_pool", None)  # Cluster: one pool per node
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)
                if self._held is not None and not self._held_busy:  # out of the pool's sight
                    await self._held.disconnect()

    async def run_script(self, script: str, queue: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run ``script`` on ``queue``'s ``keys`` (encoded) with ``args``."""
        return await self.call(lambda: self._eval(script, queue, keys, args))

    def packed_script(self, verb: str, script: str, queue: str, keys: Sequence[bytes],
                      args: Sequence[Any]) -> bytes:
        """A whole script call as one RESP command (``verb``: ``EVALSHA`` or ``EVAL``)."""
        return command(self._head(verb, script, queue, keys), len(keys) + 3, args)

    def _head(self, verb: str, script: str, queue: str, keys: Sequence[bytes]) -> bytes:
        """``verb``, then the script's sha (EVALSHA) or source (EVAL), the key count and the
        queue's keys, encoded once per (verb, script, queue)."""
        head = self._heads.get((verb, script, queue))
        if head is None:
            body = self._scripts[script].sha if verb == "EVALSHA" else self._scripts[script].script
            head = self._heads[(verb, script, queue)] = encode_all([verb, body, len(keys), *keys])
        return head

    async def _eval(self, script: str, queue: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        if self.cluster:
            return await self._scripts[script](keys=list(keys), args=list(args))
        packed = self.packed_script("EVALSHA", script, queue, keys, args)
        pool = self.client.connection_pool
        held = self._held if not self._held_busy else None
        if held is not None:  # no trip through the pool's lock and liveness probe
            self._held_busy = True
            conn = held
        else:  # the held one is in use (calls overlap in a busy worker): one from the pool
            conn = await pool.get_connection()
        try:
            if held is not None and _closed_by_server(held):  # a restart since its last call
                await held.disconnect()  # (it connects again on the send below)
            await conn.send_packed_command(packed)
            try:
                return await conn.read_response()
            except NoScriptError:  # a lost script cache: load it, send again
                await conn.send_command("SCRIPT", "LOAD", self._scripts[script].script)
                await conn.read_response()
                await conn.send_packed_command(packed)
                return await conn.read_response()
        except BaseException:  # a reply may still be on its way: never reuse this connection
            await conn.disconnect()  # (the held one connects again on its next send)
            raise
        finally:
            if held is not None:
                self._held_busy = False
            else:
                await pool.release(conn)

    async def send_in_order(self, commands: Iterable[Outgoing]) -> None:
        """Send ``commands`` on one pooled connection, in order, with at most two in flight:
        the next command is taken from ``commands`` (and so built) while Redis runs the one
        before. Scripts in it should go as ``EVAL``, so that a server that lost its script
        cache cannot refuse one while later ones are on their way."""
        await self.call(lambda: self._send_in_order(commands))

    async def _send_in_order(self, commands: Iterable[Outgoing]) -> None:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        in_flight = 0
        try:
            await conn.check_health()  # now, not between a send and its reply (a PING would read it)
            for outgoing in commands:
                if isinstance(outgoing, bytes):
                    await conn.send_packed_command(outgoing, check_health=False)
                else:
                    await conn.send_command(*outgoing, check_health=False)
                in_flight += 1
                while in_flight >= 2:
                    await conn.read_response()
                    in_flight -= 1
            while in_flight:
                await conn.read_response()
                in_flight -= 1
        except BaseException:
            await conn.disconnect()  # replies may still be on their way: never reuse it
            raise
        finally:
            await pool.release(conn)


#: what Redis says when a key holds a value a command cannot work on
DAMAGE_SIGNS = ("WRONGTYPE", "not an integer", "not a valid float", "out of range")


def refusal(url: str, exc: Exception) -> DriverError:
    """The error of the tree for a command Redis refused: ``CorruptQueueError`` when a key
    holds the wrong kind of value (the driver then names the key), else ``DriverError``."""
    text = str(exc)
    if any(sign in text for sign in DAMAGE_SIGNS):
        return CorruptQueueError(f"Redis at {url} holds a damaged queue key ({text})")
    return DriverError(f"Redis at {url} refused a command: {text}")


def _closed_by_server(conn: Any) -> bool:
    """Whether the server has closed ``conn`` (the event loop saw its end of stream)."""
    reader = getattr(conn, "_reader", None)  # redis-py's asyncio.StreamReader of the socket
    return reader is not None and reader.at_eof()


def server_is_recent_enough(version: str) -> bool:
    """Whether a ``redis_version`` string (``7.0.15``) is at least MIN_REDIS; Redis-compatible
    servers that report no parsable version are given the benefit of the doubt."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return len(parts) < 2 or parts >= MIN_REDIS


# -- RESP encoding: arguments as redis-py encodes them (bytes as they are, str as UTF-8,
# numbers as text), so a packed command is the one redis-py would have sent ------------------
def bulk(value: Any) -> bytes:
    """One argument as a RESP bulk string."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        data = repr(value).encode()
    else:
        raise TypeError(f"a Redis argument must be bytes, str, int or float, got {value!r}")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_all(values: Iterable[Any]) -> bytes:
    return b"".join(map(bulk, values))


def command(head: bytes, head_count: int, args: Sequence[Any]) -> bytes:
    """A whole command: the array header, ``head`` (``head_count`` arguments already encoded),
    then ``args``."""
    return b"*%d\r\n%b%b" % (head_count + len(args), head, encode_all(args))
