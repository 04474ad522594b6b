"""Pipelines in a notebook: ``h.then(fn)``, ``g.then(summarise)`` and ``kn.chain``.

Each builds on ``dispatch(after=...)`` (see ``dependencies``): the next job is stored waiting at
once and runs when the jobs before it have ended, on whichever worker claims it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..job import CANCELLED, FAILED
from ..serializer import dumps

if TYPE_CHECKING:
    from .functions import JobFunction
    from .handles import JobHandle
    from .queue import Queue


@dataclass(slots=True)
class Step:
    """One step of a chain: a job function and its arguments (``fn.s(...)``)."""

    fn: JobFunction
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def chain(*steps: Step) -> JobHandle:
    """Dispatch a linear pipeline: the first step with its arguments, then each next one to run
    on the result of the one before (``then``); returns the last step's handle. A step that
    fails or is cancelled cancels the steps after it."""
    if not steps:
        raise ConfigError("kn.chain() needs at least one step, like kn.chain(load.s(path), clean.s())")
    for step in steps:
        if not isinstance(step, Step):
            raise ConfigError(f"kn.chain() takes steps made with fn.s(...), got {step!r}")
    first, *rest = steps
    handle = first.fn.dispatch(*first.args, **first.kwargs)
    for step in rest:
        if step.args:
            raise ConfigError(f"step {step.fn.name} of kn.chain() takes keyword arguments only: its first "
                              "parameter gets the result of the step before")
        handle = handle.then(step.fn, **step.kwargs)
    return handle


def job_function(queue: Queue, fn: Callable[..., Any]) -> JobFunction:
    """``fn`` as a job function of ``queue``: itself if ``@q.job`` made it, else registered now."""
    from .functions import JobFunction

    return fn if isinstance(fn, JobFunction) else queue.job(fn)


def then(queue: Queue, parent: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> JobHandle:
    """Dispatch ``fn(parent's result, **kwargs)`` to run when ``parent`` completes."""
    from .handles import JobHandle

    spec = job_function(queue, fn)
    params = spec.bind_after(kwargs)
    job_id = queue.run(queue.manager.then(parent, spec.make_call(params), queue=queue.settings.name))
    return JobHandle(queue, job_id, spec.name, params)


def reduce(queue: Queue, parents: Sequence[str], fn: Callable[..., Any], include_failed: bool,
           kwargs: dict[str, Any]) -> JobHandle:
    """Dispatch ``fn(results, **kwargs)`` to run once after every one of ``parents`` ended;
    running it again for the same parents reuses the reduce stored for them (a failed one is
    retried), and two kernels dispatching it at once store one."""
    from .handles import JobHandle

    spec = job_function(queue, fn)
    params = spec.bind_after(kwargs)
    key = reduce_key(spec.name, params, parents, include_failed)
    job_id = queue.run(_reduce_once(queue, spec, params, parents, include_failed, key))
    return JobHandle(queue, job_id, spec.name, params, key)


def reduce_key(name: str, params: dict[str, Any], parents: Sequence[str], include_failed: bool) -> str:
    """The key a reduce is found again by: its function, arguments, parents and what it takes."""
    text = dumps({"params": params, "parents": sorted(parents), "failed": include_failed})
    return f"reduce:{name}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


async def _reduce_once(queue: Queue, spec: JobFunction, params: dict[str, Any], parents: Sequence[str],
                       include_failed: bool, key: str) -> str:
    manager = queue.manager
    found = (await manager.find_by_keys([key])).get(key)
    if found is not None and found.status is not CANCELLED:
        if found.status is FAILED:
            await manager.retry_failed([found.id])
        return found.id
    return await manager.reduce(list(parents), spec.make_call(params), include_failed=include_failed,
                                queue=queue.settings.name, key=key, unique=True, unique_key=key)
