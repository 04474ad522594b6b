"""Process isolation: a job with ``isolation="process"`` runs in a child process.

Children come from a reused pool (``forkserver`` where the platform has it, else ``spawn``;
never a fork of a parent that runs threads). A child runs one job at a time. The job's code
crosses to the child pickled with cloudpickle (by reference when it can be imported, by value
when it was defined in ``__main__``, a notebook cell), once per child and code digest; its
arguments and its result cross as the queue's JSON, and nothing a child sends is unpickled.
The pipe is private to the parent and the child it started.

Because the job has a process of its own, it can be stopped: a timeout or a cancel terminates
the child (SIGTERM), kills it after ``TERMINATE_GRACE_S``, and frees its slot. A child that dies
under its job (a segfault, ``os._exit``) fails that job as ``crashed``; the worker and its
other jobs go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
import multiprocessing
import os
import signal
import traceback as tb_module
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from ..errors import JobCrashedError, RetryJob, SerializationError
from ..features.resources import cuda_devices
from ..features.telemetry import check_metric, check_step
from ..serializer import decode_value, dumps, encode_value
from .context import JobContext, current_job

if TYPE_CHECKING:
    from ..job import JobRecord, QueueJob

logger = logging.getLogger(__name__)

TERMINATE_GRACE_S = 3.0  # after SIGTERM, how long a child has before SIGKILL


class ChildRaised(Exception):
    """The job raised in its child process: its error and traceback as the child told them."""

    def __init__(self, description: str, child_traceback: str) -> None:
        super().__init__(description)
        self.description = description
        self.child_traceback = child_traceback


# -- the child ----------------------------------------------------------------------------------
class ChildContext(JobContext):
    """``kn.progress()`` inside a child: each call is sent to the parent, which stores it."""

    __slots__ = ("conn",)

    def __init__(self, record: JobRecord, conn: Connection) -> None:
        super().__init__(record, None, None)  # type: ignore[arg-type]
        self.conn = conn

    def set_progress(self, fraction: float, note: str | None = None) -> None:
        message = {"type": "progress", "fraction": fraction, "note": None if note is None else str(note)}
        self.conn.send_bytes(dumps(message).encode())

    def report(self, step: Any, metrics: dict[str, Any]) -> None:
        """Checked here, so a bad report raises in the job; the parent keeps it (NaN as null)."""
        values = {name: check_metric(name, value) for name, value in metrics.items()}
        message = {"type": "report", "step": None if step is None else check_step(step), "metrics": values}
        self.conn.send_bytes(dumps(message).encode())


def child_main(conn: Connection, devices: str | None = None) -> None:
    """The loop of a child: a request (JSON header, then the code if this child lacks it),
    the job run, a JSON reply; until the parent closes the pipe. ``devices``: the GPUs its
    jobs hold, set as ``CUDA_VISIBLE_DEVICES`` before any job's code is loaded."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    import cloudpickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook or a shell is the parent's
    codes: dict[str, Any] = {}
    while True:
        try:
            header = json.loads(conn.recv_bytes())
            if header["send_code"]:
                codes[header["digest"]] = cloudpickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        reply = _run_request(codes[header["digest"]], header, conn)
        conn.send_bytes(reply.encode())


def _run_request(entry: Any, header: dict[str, Any], conn: Connection) -> str:
    from ..job import JobRecord

    record = JobRecord(id=header["id"], name=header["name"], payload=None, attempt=header["attempt"])
    context = ChildContext(record, conn)
    context.resources = header.get("resources") or {}
    token = current_job.set(context)
    try:
        value = _call(entry, header["kind"], header["args"])
        return dumps({"type": "done", "ok": True, "result": encode_value(value, f"result of {record.name}")})
    except Exception as exc:
        retry = exc.delay if isinstance(exc, RetryJob) else None
        text = str(exc)
        return dumps({"type": "done", "ok": False, "retry": isinstance(exc, RetryJob), "delay": retry,
                      "error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
                      "traceback": "".join(tb_module.format_exception(exc))})
    finally:
        current_job.reset(token)


def _call(entry: Any, kind: str, args: dict[str, Any]) -> Any:
    if kind == "function":
        value = entry(**args["kwargs"])
    else:
        job = entry.from_json(args["data"])
        job.attempt = args["attempt"]
        job.upstream = args.get("upstream")
        value = job.handle()
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    return value


# -- the parent ---------------------------------------------------------------------------------
class Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, context: Any, devices: str | None = None) -> None:
        self.conn, child_end = context.Pipe()
        self._child_end: Connection | None = child_end
        self.devices = devices  # CUDA_VISIBLE_DEVICES of its jobs (``None``: as the worker's)
        self.process: BaseProcess = context.Process(target=child_main, args=(child_end, devices), daemon=True,
                                                    name="khadem-isolated")
        self.codes: set[str] = set()  # code digests this child holds

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.process.start)
        if self._child_end is not None:
            self._child_end.close()
            self._child_end = None

    def send(self, header: dict[str, Any], code: bytes) -> None:
        send_code = header["digest"] not in self.codes
        self.conn.send_bytes(dumps({**header, "send_code": send_code}).encode())
        if send_code:
            self.conn.send_bytes(code)
            self.codes.add(header["digest"])

    async def receive(self) -> dict[str, Any]:
        """The child's next message; ``JobCrashedError`` if it died instead."""
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        ready = loop.create_future()
        loop.add_reader(fd, _settle_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            raise JobCrashedError(await self.death()) from None
        message: dict[str, Any] = json.loads(data)
        return message

    async def death(self) -> str:
        """What a child that closed its pipe died of."""
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 5.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the isolated process of the job died of {name} (exit code {code})"
        return f"the isolated process of the job exited with code {code} while the job ran"

    async def stop(self, grace: float) -> None:
        """Terminate the child, and kill it if it is still there after ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        self.conn.close()
        if self.process.is_alive():
            self.process.terminate()
            await loop.run_in_executor(None, self.process.join, grace)
        if self.process.is_alive():
            self.process.kill()
            await loop.run_in_executor(None, self.process.join, grace)

    @property
    def alive(self) -> bool:
        return self.process.is_alive()


class ProcessPool:
    """Children for isolated jobs: one per job that runs, reused once it is done."""

    def __init__(self) -> None:
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._idle: list[Child] = []
        self._busy: set[Child] = set()
        self._code: dict[int, tuple[Any, str, bytes]] = {}  # id(entry) -> (entry, digest, pickle)

    async def run(self, job: QueueJob, record: JobRecord, context: JobContext) -> Any:
        """Run ``job`` in a child; its result (as JSON decodes it), or what the job raised."""
        entry, args, kind = job.isolated_entry()
        digest, code = self._pickled(entry, record.name)
        try:
            header = json.loads(dumps({"id": record.id, "name": record.name, "attempt": record.attempt,
                                       "kind": kind, "digest": digest, "args": args,
                                       "resources": context.resources}))
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"the arguments of {record.name} cannot be sent to its isolated "
                                     f"process: {exc}") from None
        child = await self._acquire(cuda_devices(context.resources))
        try:
            child.send(header, code)
            message = await child.receive()
            while message["type"] in ("progress", "report"):
                if message["type"] == "progress":
                    context.set_progress(message["fraction"], message["note"])
                else:
                    context.report(message["step"], {name: math.nan if value is None else value
                                                     for name, value in message["metrics"].items()})
                message = await child.receive()
        except BaseException:  # a timeout, a cancel, a crash: this child is done for
            self._busy.discard(child)
            await asyncio.shield(child.stop(TERMINATE_GRACE_S))
            raise
        self._busy.discard(child)
        self._idle.append(child)
        return _outcome(message)

    def _pickled(self, entry: Any, name: str) -> tuple[str, bytes]:
        import cloudpickle

        cached = self._code.get(id(entry))
        if cached is not None and cached[0] is entry:
            return cached[1], cached[2]
        try:
            code = cloudpickle.dumps(entry)
        except Exception as exc:
            raise SerializationError(f"the code of {name} cannot be sent to an isolated process: "
                                     f"{type(exc).__name__}: {exc}") from None
        digest = hashlib.sha256(code).hexdigest()
        self._code[id(entry)] = (entry, digest, code)
        return digest, code

    async def _acquire(self, devices: str | None) -> Child:
        """An idle child started with ``devices`` as its ``CUDA_VISIBLE_DEVICES`` (a library
        reads it once, when it starts using the GPU), or a new one."""
        for child in [c for c in self._idle if not c.alive]:
            self._idle.remove(child)
        for child in self._idle:
            if child.devices == devices:
                self._idle.remove(child)
                self._busy.add(child)
                return child
        child = Child(self._context, devices)
        self._busy.add(child)
        await child.start()
        return child

    @property
    def size(self) -> int:
        return len(self._idle) + len(self._busy)

    async def close(self) -> None:
        children, self._idle = [*self._idle, *self._busy], []
        self._busy.clear()
        await asyncio.gather(*(child.stop(TERMINATE_GRACE_S) for child in children))


def _settle_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(message: dict[str, Any]) -> Any:
    if message["ok"]:
        return decode_value(message["result"])
    if message["retry"]:
        raise RetryJob(message["delay"])
    raise ChildRaised(message["error"], message["traceback"])
