"""Jobs used by the tests; a module so that worker subprocesses can import them too."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any, ClassVar

from khadem_nb import QueueJob, QueueJobWithMetadata, RetryJob, cancelled, progress, report
from khadem_nb.runtime.context import current_job

RUN_LOG: list[Any] = []  # in-process record of what ran, in order


class Echo(QueueJob):
    def __init__(self, value: Any) -> None:
        self.value = value

    async def handle(self) -> Any:
        RUN_LOG.append(self.value)
        return self.value


class Noop(QueueJob):
    async def handle(self) -> None:
        return None


class Boom(QueueJob):
    """Always fails; retries per class policy."""

    max_attempts: ClassVar[int] = 3
    retry_delay: ClassVar[float] = 0.01

    def __init__(self, message: str = "boom") -> None:
        self.message = message

    async def handle(self) -> None:
        raise RuntimeError(self.message)


class Flaky(QueueJobWithMetadata):
    """Fails until attempt ``succeed_on``."""

    retry_delay: ClassVar[float] = 0.01

    def __init__(self, succeed_on: int = 2) -> None:
        self.succeed_on = succeed_on

    async def handle(self) -> dict[str, int]:
        if self.attempt < self.succeed_on:
            raise ConnectionError(f"transient failure on attempt {self.attempt}")
        return {"attempt": self.attempt}


class ThreadName(QueueJob):
    """A sync handle: reports the thread it ran on."""

    def handle(self) -> str:
        return threading.current_thread().name


class Sleepy(QueueJob):
    timeout: ClassVar[float | None] = 0.05

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def handle(self) -> str:
        await asyncio.sleep(self.seconds)
        return "slept"


class AskRetry(QueueJob):
    max_attempts: ClassVar[int] = 2

    async def handle(self) -> int:
        if self.attempt == 1:
            raise RetryJob(delay=0.0, reason="not yet")
        return self.attempt


class Sleep(QueueJob):
    """Sleeps ``seconds`` then returns the pid; used by crash tests."""

    def __init__(self, seconds: float, tag: str = "") -> None:
        self.seconds = seconds
        self.tag = tag

    async def handle(self) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return {"pid": os.getpid(), "tag": self.tag}


class BlockingSleep(QueueJob):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def handle(self) -> float:
        time.sleep(self.seconds)
        return self.seconds


class Mark(QueueJob):
    """Appends ``tag pid`` to a shared file (O_APPEND): counts how often each job ran."""

    def __init__(self, tag: str, path: str) -> None:
        self.tag = tag
        self.path = path

    async def handle(self) -> str:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{self.tag} {os.getpid()}\n")
        return self.tag


class SleepFirst(QueueJob):
    """Sleeps on its first attempt only (the attempt a crash test kills), then returns its pid."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def handle(self) -> dict[str, int]:
        if self.attempt == 1:
            await asyncio.sleep(self.seconds)
        return {"pid": os.getpid(), "attempt": self.attempt}


class CountRunning(QueueJob):
    """Records how many CountRunning jobs run at the same moment (the peak is checked)."""

    running: ClassVar[int] = 0
    peak: ClassVar[int] = 0

    async def handle(self) -> None:
        cls = CountRunning
        cls.running += 1
        cls.peak = max(cls.peak, cls.running)
        await asyncio.sleep(0.005)
        cls.running -= 1


class Fail(QueueJob):
    """Fails at once, with no retry."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    async def handle(self) -> None:
        raise RuntimeError(f"failed {self.tag}")


class ClaimToken(QueueJob):
    """Returns the token of the claim it runs under (hand-off claims start with 'h')."""

    async def handle(self) -> str:
        return current_job.get().record.token or ""


class Cooperative(QueueJob):
    """A sync job that reports progress in small steps until cancelled or ``seconds`` pass;
    marks its start in ``path`` (if given) so a test sees that it ran."""

    def __init__(self, seconds: float, path: str = "") -> None:
        self.seconds = seconds
        self.path = path

    def handle(self) -> str:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"start {os.getpid()}\n")
        deadline = time.monotonic() + self.seconds
        step = 0
        while time.monotonic() < deadline:
            step += 1
            progress(min(1.0, step / 1000), f"step {step}")
            time.sleep(0.01)
        return "finished"


class PollsCancelled(QueueJob):
    """A sync job that never reports progress and checks ``cancelled()`` instead."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def handle(self) -> str:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if cancelled():
                return "noticed"
            time.sleep(0.01)
        return "finished"


class Isolated(QueueJob):
    """Runs in a child process: returns its pid and reports progress on the way."""

    isolation: ClassVar[str | None] = "process"

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def handle(self) -> dict[str, Any]:
        progress(0.5, "half way")
        return {"pid": os.getpid(), "value": self.value}


class Segfault(QueueJob):
    isolation: ClassVar[str | None] = "process"

    def handle(self) -> None:
        import ctypes

        ctypes.string_at(0)


class ExitHard(QueueJob):
    isolation: ClassVar[str | None] = "process"

    def handle(self) -> None:
        os._exit(3)


class BusyLoop(QueueJob):
    """CPU-bound and deaf to everything: only killing its process stops it."""

    isolation: ClassVar[str | None] = "process"

    def __init__(self, seconds: float = 60.0, path: str = "") -> None:
        self.seconds = seconds
        self.path = path

    def handle(self) -> str:
        if self.path:
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(str(os.getpid()))
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            pass
        return "done"


class IsolatedSleep(QueueJob):
    isolation: ClassVar[str | None] = "process"
    timeout: ClassVar[float | None] = 0.5

    def handle(self) -> str:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL after the grace stops it
        time.sleep(60)
        return "woke"


class MarkStart(QueueJob):
    """Appends its id and the time to ``path`` as its body starts, then works a little."""

    def __init__(self, path: str, seconds: float = 0.002) -> None:
        self.path = path
        self.seconds = seconds

    async def handle(self) -> str:
        context = current_job.get()
        job_id = context.record.id if context is not None else "?"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{job_id} {time.time():.6f}\n")
        await asyncio.sleep(self.seconds)
        return job_id


class Limited(QueueJob):
    """At most two run at once across every worker; records when it ran and where."""

    concurrency = 2

    def __init__(self, n: int, seconds: float = 0.0) -> None:
        self.n = n
        self.seconds = seconds

    async def handle(self) -> dict[str, float]:
        start = time.time()
        await asyncio.sleep(self.seconds)
        return {"start": start, "end": time.time(), "pid": os.getpid()}


class PerTenant(QueueJob):
    """One at a time per tenant."""

    concurrency = 1

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def limit_key(self) -> str:
        return self.tenant

    async def handle(self) -> str:
        return self.tenant


class Rated(QueueJob):
    """At most 10 start per second across every worker."""

    rate = "10/s"

    def __init__(self, n: int) -> None:
        self.n = n

    async def handle(self) -> float:
        return time.time()


class ThreePerSecond(QueueJob):
    rate = "3/s"

    def __init__(self, n: int) -> None:
        self.n = n

    async def handle(self) -> int:
        return self.n


class NeedsGpu(QueueJob):
    """Holds one GPU unit of the worker that runs it, and says which."""

    resources: ClassVar[dict[str, int]] = {"gpu": 1}

    def __init__(self, n: int, seconds: float = 0.0) -> None:
        self.n = n
        self.seconds = seconds

    async def handle(self) -> dict[str, Any]:
        from khadem_nb import context

        start = time.time()
        await asyncio.sleep(self.seconds)
        return {"gpu": context().resources.get("gpu"), "pid": os.getpid(), "start": start, "end": time.time(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


class OneLaneSleepFirst(QueueJob):
    """One at a time; sleeps long on its first attempt only (the attempt a crash test kills)."""

    concurrency = 1

    def __init__(self, n: int) -> None:
        self.n = n

    async def handle(self) -> dict[str, int]:
        if self.attempt == 1 and self.n == 0:
            await asyncio.sleep(60)
        return {"pid": os.getpid(), "n": self.n}


class LaneOne(QueueJob):
    """A lane that holds one job at a time (the Redis state machine's)."""

    concurrency = 1

    def __init__(self, tag: int) -> None:
        self.tag = tag

    async def handle(self) -> int:
        return self.tag


class LaneTwo(LaneOne):
    concurrency = 2


class IsolatedGpu(NeedsGpu):
    """Runs in a child process, which sees its unit as CUDA_VISIBLE_DEVICES."""

    isolation = "process"


class Beat(QueueJob):
    """A schedule's job: when it ran, and where."""

    async def handle(self) -> dict[str, float]:
        return {"at": time.time(), "pid": os.getpid()}


class SlowBeat(QueueJob):
    """A schedule's job slower than its period."""

    async def handle(self) -> dict[str, float]:
        start = time.time()
        await asyncio.sleep(2.5)
        return {"start": start, "end": time.time()}


class Stage(QueueJob):
    """A stage of a workflow: its name, the process it ran in and what it was given of the jobs
    it ran after (``upstream``); appends its name to ``path`` when one is given."""

    def __init__(self, name: str, fail: bool = False, path: str = "") -> None:
        self.name = name
        self.fail = fail
        self.path = path

    async def handle(self) -> dict[str, Any]:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"{self.name} {os.getpid()}\n")
        if self.fail:
            raise ValueError(f"stage {self.name} fails")
        return {"name": self.name, "pid": os.getpid(), "got": self.upstream}


class Summarise(QueueJob):
    """A reduce: how many points it was given, their statuses, the sum of their integer
    results; appends a line to ``path`` on every run (counts how often it ran)."""

    def __init__(self, path: str = "") -> None:
        self.path = path

    async def handle(self) -> dict[str, Any]:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"reduce {os.getpid()}\n")
        points = self.upstream or []
        numbers = [p["result"] for p in points if p["status"] == "completed" and isinstance(p["result"], int)]
        statuses = sorted({p["status"] for p in points})
        return {"count": len(points), "statuses": statuses, "total": sum(numbers)}


class Square(QueueJob):
    """Batched (up to 8 a call): squares its number, and says how many jobs shared the call; a
    negative number fails alone."""

    batch_size: ClassVar[int | None] = 8
    batch_wait: ClassVar[float] = 0.2
    calls: ClassVar[list[int]] = []  # the size of each call, in this process

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def handle_batch(cls, jobs: list[Square]) -> list[Any]:
        cls.calls.append(len(jobs))
        shared = len(jobs)
        return [ValueError(f"negative: {job.n}") if job.n < 0 else {"square": job.n * job.n, "shared": shared}
                for job in jobs]


class SquareAsync(QueueJob):
    """Batched and async: a call that raises fails every job of it (each retries once)."""

    batch_size: ClassVar[int | None] = 4
    batch_wait: ClassVar[float] = 0.05
    max_attempts: ClassVar[int] = 2
    retry_delay: ClassVar[float] = 0.01
    calls: ClassVar[list[list[int]]] = []

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    async def handle_batch(cls, jobs: list[SquareAsync]) -> list[Any]:
        cls.calls.append([job.n for job in jobs])
        await asyncio.sleep(0)
        if any(job.n == 13 and job.attempt == 1 for job in jobs):
            raise RuntimeError("unlucky batch")
        if any(job.n == 99 for job in jobs):
            return [1]  # one result for the whole batch: a broken batch function
        return [job.n * job.n for job in jobs]


class Trains(QueueJob):
    """Reports a falling loss per epoch (a NaN at epoch 2), sleeping ``pause`` seconds an epoch."""

    def __init__(self, epochs: int, pause: float = 0.0, scale: float = 1.0) -> None:
        self.epochs = epochs
        self.pause = pause
        self.scale = scale

    async def handle(self) -> float:
        for epoch in range(self.epochs):
            report(epoch, loss=self.scale / (epoch + 1), acc=float("nan") if epoch == 2 else epoch / 10)
            await asyncio.sleep(self.pause)
        return self.scale / self.epochs


class MakeArrays(QueueJob):
    """Returns an n x n array, a DataFrame of n rows, a small array and a file it writes: the
    first, second and fourth go to the artifact store, the third stays in the record."""

    def __init__(self, n: int, folder: str | None = None) -> None:
        self.n = n
        self.folder = folder

    def handle(self) -> dict[str, Any]:
        import numpy as np
        import pandas as pd

        from khadem_nb import artifact

        w = np.arange(self.n * self.n, dtype=np.float32).reshape(self.n, self.n)
        frame = pd.DataFrame({"i": range(self.n), "sq": [i * i for i in range(self.n)]})
        result: dict[str, Any] = {"w": w, "df": frame, "small": np.arange(3)}
        if self.folder is not None:
            path = os.path.join(self.folder, f"plot-{self.n}.txt")
            with open(path, "w") as handle:
                handle.write(f"a plot of {self.n}\n")
            result["plot"] = artifact(path)
        return result


class SumsArray(QueueJob):
    """Given an array (kept in the artifact store when large): its sum and its type's name."""

    def __init__(self, xs: Any) -> None:
        self.xs = xs

    def handle(self) -> dict[str, Any]:
        return {"sum": float(self.xs.sum()), "type": type(self.xs).__name__, "shape": list(self.xs.shape)}


class Counts(QueueJob):
    """Counts to ``steps``, a step every ``pause`` seconds, keeping a running total and an array;
    every ``every`` steps it checkpoints, and gives way there if its worker is stopping. Each
    step run is logged to ``log`` (one line a step), so a test counts the steps redone."""

    def __init__(self, log: str, steps: int = 100, every: int = 10, pause: float = 0.02) -> None:
        self.log = log
        self.steps = steps
        self.every = every
        self.pause = pause

    def handle(self) -> dict[str, Any]:
        import numpy as np

        from khadem_nb import Preempted, checkpoint, preempted, restore

        state = restore() or {"step": 0, "total": 0, "w": np.zeros(2000)}
        step, total, w = state["step"], state["total"], np.array(state["w"])
        while step < self.steps:
            step += 1
            total += step
            w += step
            with open(self.log, "a") as handle:
                handle.write(f"{step}\n")
            time.sleep(self.pause)
            if step % self.every == 0:
                checkpoint({"step": step, "total": total, "w": w})
                if preempted():
                    raise Preempted()
        return {"total": total, "w": float(w.sum())}


class StaleCheckpoint(QueueJob):
    """Checkpoints after its token was changed under it, as a worker that lost its lease would."""

    def handle(self) -> None:
        from khadem_nb import checkpoint, context

        context().record.token = "not-the-holder"
        checkpoint({"step": 1})


class ReadsEnvironment(QueueJob):
    """Returns an environment variable of the worker that runs it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self) -> str | None:
        return os.environ.get(self.name)


class WaitsForInput(QueueJob):
    """Snoozes until ``path`` exists (its input not ready yet), then returns what it holds."""

    max_snoozes: ClassVar[int] = 200

    def __init__(self, path: str, seconds: float = 0.05) -> None:
        self.path = path
        self.seconds = seconds

    def handle(self) -> str:
        from khadem_nb import Snooze

        if not os.path.exists(self.path):
            raise Snooze(self.seconds)
        with open(self.path, encoding="utf-8") as handle:
            return handle.read()


class AlwaysSnoozes(QueueJob):
    """Never finds its input: snoozes until its ``max_snoozes`` runs out."""

    max_snoozes: ClassVar[int] = 3
    max_attempts: ClassVar[int] = 5

    def handle(self) -> None:
        from khadem_nb import Snooze

        raise Snooze(0.01, "input not ready")
