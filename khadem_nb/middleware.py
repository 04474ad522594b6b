"""Middleware: code that wraps every job run, outermost first.

A middleware is ``async (job, next) -> Any`` or an object with ``async handle(job, next)``;
it must ``await next()`` exactly once to run the job (or raise to stop it). Its return value
is ignored: the job's own result is what gets stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ConfigError

if TYPE_CHECKING:
    from .job import QueueJob

Next = Callable[[], Awaitable[Any]]
MiddlewareFunc = Callable[["QueueJob", Next], Awaitable[Any]]


@runtime_checkable
class Middleware(Protocol):
    """Code run around every job a worker runs: ``handle`` gets the job and ``next``, awaits
    ``next(job)`` to run it (or the next middleware), and returns its result; added with
    ``manager.use(...)``. A plain ``async def f(job, next)`` is middleware too."""

    async def handle(self, job: QueueJob, next: Next) -> Any:
        """Run ``job`` through ``next`` and return its result."""
        ...


def as_middleware_func(middleware: Middleware | MiddlewareFunc) -> MiddlewareFunc:
    """Normalise the two accepted forms to a plain async callable."""
    handle = getattr(middleware, "handle", None)
    if callable(handle) and not isinstance(middleware, type):
        method: MiddlewareFunc = handle
        return method
    if callable(middleware) and not isinstance(middleware, type):
        return middleware
    raise ConfigError(
        f"middleware must be an async function (job, next) or an object with async handle(job, next),"
        f" got {middleware!r}"
    )


class MiddlewareChain:
    """An ordered list of middleware, run around a job handler."""

    def __init__(self) -> None:
        #: the middleware in the order added (the executor checks it is empty on every job)
        self.items: list[MiddlewareFunc] = []

    def add(self, middleware: Middleware | MiddlewareFunc) -> None:
        self.items.append(as_middleware_func(middleware))

    async def run(self, job: QueueJob, handler: Next) -> None:
        """Run ``handler`` inside every middleware, first added outermost."""
        if not self.items:
            await handler()
            return
        await self._call(0, job, handler)

    async def _call(self, index: int, job: QueueJob, handler: Next) -> Any:
        if index == len(self.items):
            return await handler()
        return await self.items[index](job, lambda: self._call(index + 1, job, handler))
