"""Redis driver: many processes on many machines, at-least-once, on Redis or Redis Cluster.

Every state change is one Lua script (``drivers/lua/``) that reads the clock with ``TIME``,
so client clocks never matter. A queue's keys all carry one hash tag, ``{prefix:queue}``, and
every script declares all the keys it touches, so the driver runs unchanged on Redis Cluster.
Job fields live in a few hashes keyed by job id: ``state`` (``status,attempt,priority,
available,started,finished,lease``, a tab, then the job's data as written at dispatch: one
field per job that a claim or a settle reads and rewrites whole), ``token``, ``result``,
``error``, ``reclaims`` and ``meta``. Scripts split the state text instead of decoding and
re-encoding a JSON record, and a batch (an enqueue of many jobs, a claim, the settles of one
loop turn) writes each hash once with a variadic command, since a ``redis.call`` costs more
than the work it does on one field. Ready jobs of priority 0 wait in the ``line`` list, the
others in the ``ready`` sorted set (see ``_common.lua``). A bulk dispatch streams its chunks on
one connection, so Redis stores one while Python builds the next; other script calls go out
with the script and keys encoded once (``_resp``), on a connection kept out of the pool. What
the scripts take and give back is built and read in ``redis_wire``.

A claim grants a lease and a fresh token. Workers renew leases with ``heartbeat``; a job
whose lease expired is put back by the next ``reserve`` that wins the sweep lock (any worker,
at most every lease/4 seconds), or ends failed after ``queue.max_reclaims`` reclaims. Every
write after a claim is fenced by the token. Idle workers wait on a notify list (``BLPOP``),
not by polling, and wake when the next delayed job is due. An idle worker's last claim also
registered it for hand-off: a dispatch that finds it waiting, with nothing else ready, claims
the job for it in the enqueue script and pushes it on the hand-off list the worker blocks on
(no claim round trip). Settles are published with each job's new status and, when small,
its result, so waiters elsewhere need not read the record. Settles that fail because Redis
went away are retried with backoff until the lease would have run out; a dispatch while Redis
is down raises ``DriverUnavailableError`` within ``queue.connect_timeout``.

A job id does not name its queue: lookups by id ask the default queue first, then the other
queues this driver used, then those registered in ``{prefix}:queues`` (``redis_queues``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from importlib import resources
from typing import Any, ClassVar, TypeVar

from .._ids import new_token
from .._time import now_ms
from ..config import QueueSettings
from ..errors import ConfigError, DriverError, DriverUnavailableError
from ..job import JobRecord, JobStatus
from ..serializer import dumps
from . import _resp
from . import redis_wire as wire
from ._records import due_view
from .base import LEASE_LOST_ERROR, NO_RESULT, QueueDriver, SettleNotice, empty_counts
from .redis_queues import QueueDirectory

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The key layout every script shares; the order matches the K_* constants in _common.lua.
KEY_NAMES = ("seq", "ready", "delayed", "active", "completed", "failed", "all", "state", "token",
             "result", "error", "reclaims", "meta", "keys", "notify", "sweep", "waiting", "handoff",
             "line")
COLUMNS = ("state", "token", "result", "error", "reclaims", "meta")
STATUS_SETS = {JobStatus.QUEUED: "ready", JobStatus.SCHEDULED: "delayed", JobStatus.ACTIVE: "active",
               JobStatus.COMPLETED: "completed", JobStatus.FAILED: "failed"}
SCRIPTS = ("enqueue", "reserve", "settle", "heartbeat", "meta", "requeue", "fetch", "leave", "statuses")
FETCH_CHUNK = 2000  # records read per script call
MAX_PRIORITY = 4000  # scores are -priority * 1e12 + seq: exact in a double up to this
PUSH_CHUNK = 200  # jobs per enqueue call; a bigger push streams its chunks
MIN_REDIS = (6, 2)  # LPOP with a count (reserve.lua)
MAX_WAIT_S = 1.0  # longest block on a notify list: other queues and sweeps are looked at as often
SETTLED_STATES = {s.value: s for s in JobStatus}  # status words as the scripts write them
_persistence_warned: set[str] = set()


def _script(name: str) -> str:
    folder = resources.files("khadem_nb.drivers") / "lua"
    return (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


def queue_keys(prefix: str, queue: str) -> list[str]:
    """All keys of one queue, sharing the hash tag ``{prefix:queue}``."""
    tag = f"{{{prefix}:{queue}}}"
    return [f"{tag}:{name}" for name in KEY_NAMES]


def settle_channels(prefix: str) -> str:
    """The pattern of every queue's settle channel under ``prefix`` (settle.lua publishes on
    ``{prefix:queue}:notify:settled``), with the prefix's glob characters escaped."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"{{{escaped}:*}}:notify:settled"


class RedisDriver(QueueDriver):
    """At-least-once queue on Redis (standalone or Cluster)."""

    durable: ClassVar[bool] = True
    shared: ClassVar[bool] = True
    uses_leases: ClassVar[bool] = True
    max_priority: ClassVar[int | None] = MAX_PRIORITY

    def __init__(self, settings: QueueSettings) -> None:
        super().__init__(settings)
        if "{" in settings.prefix or "}" in settings.prefix:
            raise ConfigError(f"queue.prefix {settings.prefix!r} contains '{{' or '}}', which would give a "
                              "queue's keys different hash tags and split it across cluster slots")
        self.url = settings.redacted_url()
        self.client: Any = None
        self.cluster = False
        self._scripts: dict[str, Any] = {}
        self._keys: dict[str, list[str]] = {}
        self.queues = QueueDirectory(settings.prefix, settings.name)  # where get() looks for an id
        self._encoded_keys: dict[str, list[bytes]] = {}
        self._heads: dict[tuple[str, str, str], bytes] = {}  # see _head
        self._held: Any = None  # a connection kept out of the pool for script calls (see _eval)
        self._held_busy = False
        self._generation = 0
        self._retention_args = wire.retention_args(settings)
        self._lease_ms = int(settings.lease_s * 1000)
        # reserve.lua's fixed arguments: max reclaims, sweep interval (ms), lease-lost error
        self._reserve_constants = [settings.max_reclaims, max(100, int(settings.lease_s * 250)),
                                   LEASE_LOST_ERROR.replace("{n}", "%d")]
        # how this worker registers for hand-off (enqueue.lua): its lease and a unique name
        self._waiter = f"{self._lease_ms}|{new_token()}"
        self._registered: set[str] = set()  # queues whose K_WAITING may hold self._waiter
        self._leaving: asyncio.Task[None] | None = None  # the leave.lua calls of interrupt_waits
        self._queue_was_empty = False  # the last claim came back short: wait before claiming
        self._next_due_at: float | None = None  # loop time when the next delayed job is due
        self._outage = False
        self._settles: list[tuple[str, list[Any], asyncio.Future[Any]]] = []
        self._watchers: dict[str, list[SettleNotice]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # settle sends, hand-off leaves

    # -- connecting ------------------------------------------------------------------------------
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
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        s = self.settings
        options = self._client_options()
        if s.url and s.url.startswith("rediss://"):
            options["ssl"] = True
        client: Any = aioredis.Redis(host=s.host, port=s.port, db=s.db, username=s.username,
                                password=s.password, **options)
        try:
            await asyncio.wait_for(client.ping(), s.connect_timeout_s + 1)
            info = {**await client.info("server"), **await client.info("cluster")}
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
        self._scripts = {name: client.register_script(_script(name)) for name in SCRIPTS}
        if not self.cluster:
            self._held = await client.connection_pool.get_connection()
        await self._warn_without_persistence()

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

    async def watch(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        """Settles are published on ``{tag}:notify:settled``; one subscriber per driver fans out."""
        if self._listener is None or self._listener.done():
            ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.get_running_loop().create_task(self._listen(ready))
            await ready
        for job_id in job_ids:
            self._watchers.setdefault(job_id, []).append(notice)

        def unwatch() -> None:
            for job_id in job_ids:
                notices = self._watchers.get(job_id)
                if notices is not None:
                    with contextlib.suppress(ValueError):
                        notices.remove(notice)
                    if not notices:
                        del self._watchers[job_id]

        return unwatch

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.psubscribe(settle_channels(self.settings.prefix))
            ready.set_result(None)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self._tell_watchers(message["data"].decode())
        except Exception as exc:  # a dead subscription only makes waiters fall back to polling
            if not ready.done():
                ready.set_result(None)
            logger.debug("settle listener stopped: %r", exc)
        finally:
            await pubsub.aclose()

    def _tell_watchers(self, message: str) -> None:
        """One settle call's notice (settle.lua): a line per job, ``id<TAB>status[<TAB>result]``.
        A message without tabs (space-separated bare ids) names jobs whose status is unknown."""
        lines = message.split("\n") if "\t" in message else message.split()
        for line in lines:
            job_id, _, rest = line.partition("\t")
            notices = self._watchers.get(job_id)
            if not notices:
                continue
            state, _, result_text = rest.partition("\t")
            result = json.loads(result_text) if result_text else NO_RESULT
            for notice in list(notices):
                notice(job_id, SETTLED_STATES.get(state), result)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self.client is not None:
            await self._unregister()
            if self._held is not None:
                await self.client.connection_pool.release(self._held)
                self._held = None
            await self.client.aclose()
            self.client = None

    async def worker_stopped(self) -> None:
        await self._unregister()

    async def _unregister(self) -> None:
        """Leave the hand-off line of every queue this driver waited on (leave.lua gives back
        jobs handed off that nobody will pop). Best effort: an entry left behind expires within
        about a second, and a job handed to it is reclaimed when its lease runs out."""
        from redis.exceptions import RedisError

        queues, self._registered = self._registered, set()
        for queue in queues:
            with contextlib.suppress(RedisError, OSError, TimeoutError, DriverError):
                await asyncio.wait_for(self._run("leave", queue, [self._waiter]), 2.0)

    def keys(self, queue: str) -> list[str]:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = queue_keys(self.settings.prefix, queue)
            self._encoded_keys[queue] = [k.encode() for k in keys]
            self.queues.saw(queue)
        return keys

    def _script_keys(self, queue: str) -> list[bytes]:
        """The queue's keys pre-encoded: redis-py then skips encoding 20 strings per call."""
        self.keys(queue)
        return self._encoded_keys[queue]

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run one command; a lost connection becomes DriverUnavailableError naming the server."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self.client is None:
            raise DriverError(f"the Redis queue at {self.url} is closed")
        try:
            value = await make()
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
        """The server went away: close every idle connection, the held one included, so none is
        used again after it comes back (the pool's own check let a connection to a killed server
        through)."""
        pool = getattr(self.client, "connection_pool", None)  # Cluster: one pool per node
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)
                if self._held is not None and not self._held_busy:  # out of the pool's sight
                    await self._held.disconnect()

    async def _run(self, script: str, queue: str, args: Sequence[Any]) -> Any:
        return await self._call(lambda: self._eval(script, queue, args))

    def _head(self, verb: str, script: str, queue: str) -> bytes:
        """``verb`` (EVALSHA: the script's sha; EVAL: its source), then the key count and the
        queue's keys, encoded once per (verb, script, queue) (see _resp)."""
        head = self._heads.get((verb, script, queue))
        if head is None:
            keys = self._script_keys(queue)
            body = self._scripts[script].sha if verb == "EVALSHA" else self._scripts[script].script
            head = self._heads[(verb, script, queue)] = _resp.encode_all([verb, body, len(keys), *keys])
        return head

    async def _eval(self, script: str, queue: str, args: Sequence[Any]) -> Any:
        """EVALSHA of ``script`` on ``queue``'s keys, sent with the script and keys encoded once
        (see _resp); through redis-py on Cluster, where it routes each call to its node."""
        from redis.exceptions import NoScriptError

        if self.cluster:
            return await self._scripts[script](keys=self._script_keys(queue), args=list(args))
        packed = _resp.command(self._head("EVALSHA", script, queue), len(KEY_NAMES) + 3, args)
        pool = self.client.connection_pool
        held = self._held if not self._held_busy else None
        if held is not None:  # no pool round (lock, liveness probe): a quarter less client CPU
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
            except NoScriptError:  # a lost script cache (restart, failover): load it, send again
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

    def default_prefetch(self, concurrency: int) -> int:
        """Half as many jobs as consumers: while one half waits for its settles, the other runs
        jobs claimed ahead, so Python and Redis work at once (measured: 33k jobs/s without
        prefetch, 51k at half, 35k at a full batch, whose claim and settle travel together)."""
        return concurrency // 2

    # -- producing -------------------------------------------------------------------------------
    async def push(self, records: Sequence[JobRecord]) -> None:
        for record in records:  # built before the manager had this driver: checked here, all first
            self.check_priority(record.priority)
        chunks = [records[i : i + PUSH_CHUNK] for i in range(0, len(records), PUSH_CHUNK)]
        await (self._enqueue_each(chunks) if len(chunks) <= 1 else self.push_chunks(chunks))

    async def push_chunks(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        if self.cluster:  # no single connection pool to hold a connection from: call by call
            await self._enqueue_each(chunks)
        else:
            await self._call(functools.partial(self._stream_enqueue, chunks))

    async def _left(self) -> None:
        """Wait for a worker of this driver that was just paused or stopped to leave the
        hand-off line, so a dispatch that follows cannot hand it a job it will not run."""
        if self._leaving is not None and not self._leaving.done():
            await self._leaving

    async def _enqueue_each(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        """One enqueue script call per queue of each chunk, each awaited before the next."""
        await self._left()
        for chunk in chunks:
            by_queue = wire.by_queue(chunk)
            new = self.queues.to_announce(by_queue)
            if new:
                await self._call(functools.partial(self.client.sadd, self.queues.key, *new))
                self.queues.announced(new)
            for queue, queued in by_queue.items():
                await self._run("enqueue", queue, wire.enqueue_args(queued))

    async def _stream_enqueue(self, chunks: Iterable[Sequence[JobRecord]]) -> None:
        """Send chunk after chunk on one connection, each before the next is built.

        Redis stores one chunk while Python builds and formats the next (a bulk enqueue was
        about half Python, half Redis, one after the other), and one connection keeps the
        chunks in order. The script goes as EVAL, so a server that lost its script cache
        (restart, failover) cannot answer a chunk with NOSCRIPT while later ones are on the way.
        """
        await self._left()
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        in_flight = 0
        try:
            await conn.check_health()  # now, not between a send and its reply (a PING would read it)
            for chunk in chunks:
                by_queue = wire.by_queue(chunk)
                new = self.queues.to_announce(by_queue)
                if new:  # registered before its jobs are stored, so none is stored unfindable
                    await conn.send_command("SADD", self.queues.key, *new, check_health=False)
                    self.queues.announced(new)
                    in_flight += 1
                for queue, queued in by_queue.items():
                    packed = _resp.command(self._head("EVAL", "enqueue", queue), len(KEY_NAMES) + 3,
                                           wire.enqueue_args(queued))
                    await conn.send_packed_command(packed, check_health=False)
                    in_flight += 1
                    while in_flight >= 2:  # the one before is done: one chunk stored, one built
                        await conn.read_response()
                        in_flight -= 1
            while in_flight:
                await conn.read_response()
                in_flight -= 1
        except BaseException:
            self.queues.forget_announced()  # an SADD sent may not have been stored
            await conn.disconnect()  # replies may still be on their way: never reuse it
            raise
        finally:
            await pool.release(conn)

    # -- consuming -------------------------------------------------------------------------------
    def interrupt_waits(self) -> None:
        """Paused or stopping: waits return, and the worker leaves the hand-off line."""
        self._generation += 1
        if self._registered and self.client is not None:
            self._leaving = self._in_background(self._unregister())

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float) -> list[JobRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        generation = self._generation
        if wait_s > 0 and self._queue_was_empty:  # nothing was left a moment ago: wait first, so
            handed = await self._wait_for_work(queues, wait_s)  # no empty claim runs ahead of our settles
            if handed:
                self._queue_was_empty = False
                return handed
        while True:
            if generation != self._generation:  # paused or stopping while it waited: claim nothing
                return []
            claimed = await self._claim(queues, limit, wait_s)
            self._queue_was_empty = len(claimed) < limit
            remaining = deadline - loop.time()
            if claimed or remaining <= 0 or generation != self._generation:
                return claimed
            handed = await self._wait_for_work(queues, remaining)
            if handed:
                self._queue_was_empty = False
                return handed

    async def _claim(self, queues: Sequence[str], limit: int, wait_s: float) -> list[JobRecord]:
        """Claim from each queue in turn; on the first, register for hand-off while waiting."""
        claimed: list[JobRecord] = []
        for queue in queues:
            first = queue == queues[0]
            register_ms = int(min(wait_s, MAX_WAIT_S) * 1000) + 100 if first and wait_s > 0 else 0
            if register_ms:
                self._registered.add(queue)
            # the token prefix is unique per claim; the script numbers the jobs after it
            args = [limit - len(claimed), self._lease_ms, new_token(), *self._reserve_constants,
                    self._waiter if first else "", register_ms]
            rows = await self._run("reserve", queue, args)
            if first:
                due_in_ms = int(rows[1])
                self._next_due_at = None if due_in_ms < 0 else loop_time() + due_in_ms / 1000
            claimed += wire.claimed_records(queue, rows, self.settings.lease_s)
            if len(claimed) >= limit:
                break
        return claimed

    async def _wait_for_work(self, queues: Sequence[str], timeout: float) -> list[JobRecord]:
        """Block on the first queue's hand-off and notify lists (no polling): returns a job
        handed off by a dispatch, or nothing once woken by a dispatch or retry, by the next
        delayed job falling due, or after at most a second (other queues, sweeps)."""
        keys = self.keys(queues[0])
        handoff = keys[KEY_NAMES.index("handoff")]
        wait = min(timeout, MAX_WAIT_S)
        if self._next_due_at is not None:
            wait = min(wait, self._next_due_at - loop_time())
        wait = max(0.01, wait)
        popped = await self._call(lambda: self.client.blpop([handoff, keys[KEY_NAMES.index("notify")]],
                                                            timeout=wait))
        if popped is None or popped[0].decode() != handoff:
            return []
        return [wire.handed_off_record(queues[0], popped[1], self.settings.lease_s)]

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        alive: dict[str, bool] = {}
        by_queue: dict[str, list[JobRecord]] = {}
        for record in records:
            by_queue.setdefault(record.queue, []).append(record)
        for queue, held in by_queue.items():
            args: list[Any] = [int(self.settings.lease_s * 1000)]
            for record in held:
                args += [record.id, record.token or ""]
            flags = await self._run("heartbeat", queue, args)
            alive.update({r.id: bool(f) for r, f in zip(held, flags, strict=True)})
        return [alive[r.id] for r in records]

    async def _settle(self, record: JobRecord, token: str | None) -> bool:
        plain = record.status is JobStatus.COMPLETED and not record.meta
        args = wire.completion_args(record, token) if plain else self._general_settle_args(record, token)
        settled = await self._retrying(lambda: self._batched_settle(record.queue, args))
        record.token = None
        return bool(settled)

    @staticmethod
    def _general_settle_args(record: JobRecord, token: str | None) -> list[Any]:
        release = record.status is JobStatus.QUEUED and record.error is None and record.finished_ms is None \
            and record.started_ms is None
        delay = max(0, record.available_ms - now_ms()) if record.status in (JobStatus.QUEUED,
                                                                          JobStatus.SCHEDULED) else 0
        args = [record.id, token or "", record.status.value,
                dumps(record.result) if record.status is JobStatus.COMPLETED else "",
                "" if record.error is None else dumps([record.error, record.traceback]), delay,
                dumps(record.meta) if record.meta else "",
                "1" if release else "0"]
        return args

    async def _batched_settle(self, queue: str, args: list[Any]) -> Any:
        """Queue one settle; every settle asked for in the same loop turn goes in one pipeline."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._settles.append((queue, args, future))
        if len(self._settles) == 1:
            asyncio.get_running_loop().call_soon(self._flush_settles)
        return await future

    def _flush_settles(self) -> None:
        batch, self._settles = self._settles, []
        self._in_background(self._send_settles(batch))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task held until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _send_settles(self, batch: list[tuple[str, list[Any], asyncio.Future[Any]]]) -> None:
        """One script call per queue settles the whole batch (one round trip, one arg packing)."""
        by_queue: dict[str, list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        for queue, args, future in batch:
            by_queue.setdefault(queue, []).append((args, future))
        for queue, unordered in by_queue.items():
            # plain completions first, three values each, then the rest with eight (settle.lua)
            items = [i for i in unordered if len(i[0]) == 3] + [i for i in unordered if len(i[0]) != 3]
            plain = len(items) - sum(1 for i in unordered if len(i[0]) != 3)
            args = [*self._retention_args, plain, *(a for job_args, _ in items for a in job_args)]
            try:
                flags = await self._run("settle", queue, args)
            except Exception as exc:
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), flag in zip(items, flags, strict=True):
                if not future.done():
                    future.set_result(flag)

    async def _retrying(self, make: Callable[[], Awaitable[T]]) -> T:
        """Retry through an outage with backoff, until a lease would have expired anyway."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lease_s
        delay = 0.05
        while True:
            try:
                return await make()
            except DriverUnavailableError:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        merged = {**record.meta, **meta}
        return bool(await self._run("meta", record.queue, [record.id, record.token or "", dumps(merged)]))

    # -- inspecting ------------------------------------------------------------------------------
    async def _fetch(self, queue: str, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        width, records = len(COLUMNS), []
        for start in range(0, len(ids), FETCH_CHUNK):  # short scripts: Redis serves others between
            chunk = ids[start : start + FETCH_CHUNK]
            rows = await self._run("fetch", queue, chunk)
            records += [wire.record_from_columns(queue, job_id, rows[i * width : (i + 1) * width])
                        for i, job_id in enumerate(chunk)]
        return records

    async def get(self, job_id: str) -> JobRecord | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Each id is looked for in the default queue, then in the others (see redis_queues)."""
        return await self.queues.find(job_ids, self._fetch, self._registered_queues)

    async def statuses(self, job_ids: Sequence[str]) -> builtins.list[JobStatus | None]:
        return await self.queues.find(job_ids, self._statuses_in, self._registered_queues)

    async def _statuses_in(self, queue: str, job_ids: Sequence[str]) -> builtins.list[JobStatus | None]:
        found = []
        for start in range(0, len(job_ids), FETCH_CHUNK):
            found += await self._run("statuses", queue, job_ids[start : start + FETCH_CHUNK])
        return [SETTLED_STATES[w.decode()] if w else None for w in found]

    async def _registered_queues(self) -> builtins.list[str]:
        """The queue names every driver under this prefix has dispatched to."""
        return wire.text(await self._call(lambda: self.client.smembers(self.queues.key)))

    async def _all_queues(self) -> builtins.list[str]:
        return await self.queues.everywhere(self._registered_queues)

    async def list(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        """Records of ``queue``, or of every queue under the prefix (merged by creation time)."""
        if queue is not None:
            return await self._list_queue(status, queue, limit)
        records = [r for q in await self._all_queues() for r in await self._list_queue(status, q, limit)]
        records.sort(key=lambda r: r.created_ms)
        return records[-limit:] if limit else records

    async def _list_queue(self, status: JobStatus | None, queue: str,
                          limit: int | None) -> builtins.list[JobRecord]:
        keys = self.keys(queue)
        key = keys[KEY_NAMES.index("all" if status is None else STATUS_SETS[status])]
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            ids = await self._call(lambda: self.client.zrange(key, 0, -1))
            if status is JobStatus.QUEUED:  # priority 0 waits in the line (see _common.lua)
                line = keys[KEY_NAMES.index("line")]
                ids += await self._call(lambda: self.client.lrange(line, 0, -1))
            records = [r for r in await self._fetch(queue, wire.text(ids)) if r is not None]
            records.sort(key=lambda r: r.created_ms)
            if status is JobStatus.QUEUED:  # due delayed jobs count as queued until promoted
                records += await self._due_delayed(queue)
                records.sort(key=lambda r: r.created_ms)
            return records[-limit:] if limit else records
        start = -limit if limit else 0
        ids = await self._call(lambda: self.client.zrange(key, start, -1))
        records = [r for r in await self._fetch(queue, wire.text(ids)) if r is not None]
        if status is not None:
            records.sort(key=lambda r: r.created_ms)
        return [due_view(r) for r in records]

    async def _due_delayed(self, queue: str) -> builtins.list[JobRecord]:
        key = self.keys(queue)[KEY_NAMES.index("delayed")]
        ids = await self._call(lambda: self.client.zrangebyscore(key, "-inf", now_ms()))
        return [due_view(r) for r in await self._fetch(queue, wire.text(ids)) if r is not None]

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        """Counts of ``queue``, or summed over every queue under the prefix, in one round trip."""
        queues = [queue] if queue is not None else await self._all_queues()
        per_queue = len(STATUS_SETS) + 2

        async def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for name in queues:
                keys = self.keys(name)
                for status in JobStatus:
                    pipe.zcard(keys[KEY_NAMES.index(STATUS_SETS[status])])
                pipe.llen(keys[KEY_NAMES.index("line")])
                pipe.zcount(keys[KEY_NAMES.index("delayed")], "-inf", now_ms())
            return await pipe.execute()

        values = await self._call(run)
        counts = empty_counts()
        for start in range(0, len(values), per_queue):
            *sets, line, due = (int(n) for n in values[start : start + per_queue])
            for status, n in zip(JobStatus, sets, strict=True):
                counts[status] += n
            counts[JobStatus.QUEUED] += line + due  # due delayed jobs count as queued
            counts[JobStatus.SCHEDULED] -= due
        return counts

    async def requeue(self, job_ids: Iterable[str]) -> int:
        """Failed jobs back to their own queues (each found as ``get`` finds it)."""
        ids = builtins.list(dict.fromkeys(job_ids))

        async def queue_of(queue: str, chunk: Sequence[str]) -> builtins.list[str | None]:
            return [None if s is None else queue for s in await self._statuses_in(queue, chunk)]

        by_queue: dict[str, builtins.list[str]] = {}
        for job_id, queue in zip(ids, await self.queues.find(ids, queue_of, self._registered_queues),
                                 strict=True):
            if queue is not None:
                by_queue.setdefault(queue, []).append(job_id)
        return sum([int(await self._run("requeue", queue, found)) for queue, found in by_queue.items()])

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, JobRecord]:
        if not keys:
            return {}
        queue = self.settings.name
        index = self.keys(queue)[KEY_NAMES.index("keys")]
        ids = await self._call(lambda: self.client.hmget(index, list(keys)))
        pairs = [(k, i.decode()) for k, i in zip(keys, ids, strict=True) if i is not None]
        records = await self._fetch(queue, [i for _, i in pairs])
        return {k: r for (k, _), r in zip(pairs, records, strict=True) if r is not None}

    async def purge(self) -> None:
        """Delete every queue under the prefix, and the registry of them."""
        keys = [key for queue in await self._all_queues() for key in self.keys(queue)]
        await self._call(lambda: self._delete([*keys, self.queues.key]))
        self.queues.forget_announced()

    async def _delete(self, keys: builtins.list[str]) -> None:
        if self.cluster:  # one DEL may not span slots
            for key in keys:
                await self.client.delete(key)
        else:
            await self.client.delete(*keys)


def _closed_by_server(conn: Any) -> bool:
    """Whether the server has closed ``conn`` (the event loop saw its end of stream)."""
    reader = getattr(conn, "_reader", None)  # redis-py's asyncio.StreamReader of the socket
    return reader is not None and reader.at_eof()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def server_is_recent_enough(version: str) -> bool:
    """Whether a ``redis_version`` string (``7.0.15``) is at least MIN_REDIS; Redis-compatible
    servers that report no parsable version are given the benefit of the doubt."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return len(parts) < 2 or parts >= MIN_REDIS
