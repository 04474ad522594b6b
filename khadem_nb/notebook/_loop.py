"""Where the queue's coroutines run, and how sync code waits for them.

In a notebook the kernel's own loop is running in the main thread and cells run inside it:
the queue lives on that loop, its workers are tasks on it, and a blocking wait in a cell
re-enters the loop through nest-asyncio2, applied the first time such a wait happens (never
at import). In a plain script there is no running loop: the queue starts a private loop in a
daemon thread and sync calls wait on it like on any future. From any other thread, waits are
handed to the queue's loop with ``run_coroutine_threadsafe``. In marimo, whose cells run with
no loop of their own, that thread is a ``marimo.Thread``: only such threads may update what a
cell shows (the panel's refreshes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

_patched_loops: set[int] = set()


def _allow_nested_waits(loop: asyncio.AbstractEventLoop) -> None:
    """Apply nest-asyncio2 to ``loop`` once, so a cell can block on it while it keeps running."""
    if id(loop) in _patched_loops:
        return
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    _patched_loops.add(id(loop))
    logger.debug("nest-asyncio2 applied to the kernel loop for a blocking wait")


class LoopRunner:
    """Owns the queue's home loop: the running one at creation, or a private thread's loop."""

    def __init__(self) -> None:
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            self.private = False
        except RuntimeError:
            self._loop = None
            self.private = True
        self._thread: threading.Thread | None = None
        self._home_thread_id = threading.get_ident() if self._loop is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._start_private_loop()
        assert self._loop is not None
        return self._loop

    def _start_private_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = _thread_type()(target=run, name="khadem-nb-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._home_thread_id = self._thread.ident
        self._loop = loop

    def on_home_thread(self) -> bool:
        return threading.get_ident() == self._home_thread_id

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and block until it is done, from any thread."""
        loop = self.loop
        if not self.on_home_thread():
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        if loop.is_running():
            _allow_nested_waits(loop)
        return loop.run_until_complete(coro)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | asyncio.Task[T]:
        """Start ``coro`` on the home loop without waiting for it."""
        if self.on_home_thread() and self.loop.is_running():
            return self.loop.create_task(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from any loop: directly on the home loop, else through a future."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        """Stop a private loop: its remaining tasks (a panel's refresher whose cancel was only
        just asked for) are cancelled and awaited first, as ``asyncio.run`` does."""
        if self.private and self._loop is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None
            self._thread = None


def _thread_type() -> type[threading.Thread]:
    """``marimo.Thread`` inside a running marimo notebook (marimo imported already), else
    ``threading.Thread``."""
    marimo = sys.modules.get("marimo")
    if marimo is not None and marimo.running_in_notebook():
        return marimo.Thread  # type: ignore[no-any-return]
    return threading.Thread


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
