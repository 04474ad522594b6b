"""Plain functions as jobs: ``@q.job`` turns ``def train(lr, epochs)`` into a job function.

A call is stored as the job name (``module.qualname``) and its arguments bound to parameter
names, so each point of a sweep carries its parameters as named values. The function itself
is not stored: a worker process finds it by importing its module. A function defined in a
notebook cell lives in ``__main__`` and only in-kernel workers can run it (with
``isolation="process"``, in a child process those workers start).
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Self

from .. import limits
from ..errors import ConfigError, SerializationError
from ..features.dependencies import GROUP_FEEDS
from ..features.flow import check_fair, check_limit_key
from ..features.pruning import check_pruner
from ..features.unique import canonical_key
from ..job import QueueJob
from ..limits import check_concurrency, check_isolation, check_resources, parse_rate
from ..registry import job_factories

if TYPE_CHECKING:
    from .handles import JobGroup, JobHandle
    from .optimize import Study
    from .queue import Queue
    from .workflows import Step



class FunctionCall(QueueJob):
    """One call of a job function; ``handle`` is the function itself."""

    _abstract_job = True
    job_name_override: ClassVar[str | None] = None

    def __init__(self, spec: JobFunction, kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.kwargs = kwargs
        #: the parameter that gets a sweep's results as a DataFrame (a reduce), if any
        self.frame_of: str | None = None
        self.max_attempts = spec.max_attempts  # type: ignore[misc]
        self.retry_delay = spec.retry_delay  # type: ignore[misc]
        self.priority = spec.priority  # type: ignore[misc]
        self.timeout = spec.timeout  # type: ignore[misc]
        self.retry_jitter = spec.retry_jitter  # type: ignore[misc]
        self.isolation = spec.isolation  # type: ignore[misc]
        self.keep_result = spec.keep_result  # type: ignore[misc]
        self.concurrency = spec.concurrency  # type: ignore[misc]
        self.rate = spec.rate  # type: ignore[misc]
        self.fair = spec.fair  # type: ignore[misc]
        self.resources = spec.resources  # type: ignore[misc]
        self.batch_size = spec.batch_size  # type: ignore[misc]
        self.batch_wait = spec.batch_wait  # type: ignore[misc]

    def limit_key(self) -> str | None:
        """The job function's ``limit_key`` of this call's arguments."""
        return None if self.spec.limit_key is None else self.spec.limit_key(self.kwargs)

    def job_name(self) -> str:  # type: ignore[override]
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        return {"kwargs": self.kwargs}

    def code_entry(self) -> Any:
        return self.spec.fn

    def take_upstream(self, given: Any, feed: str) -> None:
        """What the jobs this call ran after give it goes to the function's first parameter:
        the parent's result (``then``), or the group's results as a DataFrame (``reduce``)."""
        self.upstream = given
        first = self.spec.first_parameter()
        self.kwargs = {first: given, **self.kwargs}
        if feed in GROUP_FEEDS:
            self.frame_of = first

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments the function is called with."""
        if self.frame_of is None:
            return self.kwargs
        from .frames import outcomes_frame

        return {**self.kwargs, self.frame_of: outcomes_frame(self.kwargs[self.frame_of])}

    def isolated_entry(self) -> tuple[Any, dict[str, Any], str]:
        """The function itself travels (by value when a cell defined it), with its arguments;
        a reduce's parent outcomes become their DataFrame in the child, as they do here."""
        entry = self.spec.fn if not self.frame_of else functools.partial(_given_frame, self.spec.fn,
                                                                          self.frame_of)
        return entry, {"kwargs": self.kwargs}, "function"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.spec.name}({args})"


def _given_frame(fn: Callable[..., Any], frame_of: str, **kwargs: Any) -> Any:
    """Call ``fn`` with the outcomes in ``kwargs[frame_of]`` as a DataFrame (an isolated reduce)."""
    from .frames import outcomes_frame  # pandas, only where a reduce runs

    return fn(**{**kwargs, frame_of: outcomes_frame(kwargs[frame_of])})


def _columns(calls: list[FunctionCall]) -> dict[str, list[Any]]:
    """A batch's arguments as the function takes them: each parameter bound to the list of the
    calls' values for it, in the calls' order."""
    return {name: [call.arguments()[name] for call in calls] for name in calls[0].arguments()}


class AsyncFunctionCall(FunctionCall):
    _abstract_job = True

    async def handle(self) -> Any:
        return await self.spec.fn(**self.arguments())

    @classmethod
    async def handle_batch(cls, jobs: list[Self]) -> Any:
        """A batched job function is called once with each parameter a list (``_columns``)."""
        return await jobs[0].spec.fn(**_columns(list(jobs)))


class SyncFunctionCall(FunctionCall):
    _abstract_job = True

    def handle(self) -> Any:
        return self.spec.fn(**self.arguments())

    @classmethod
    def handle_batch(cls, jobs: list[Self]) -> Any:
        """A batched job function is called once with each parameter a list (``_columns``)."""
        return jobs[0].spec.fn(**_columns(list(jobs)))


class JobFunction:
    """What ``@q.job`` returns: call it to run inline, or ``dispatch``/``map``/``sweep`` it."""

    def __init__(self, queue: Queue, fn: Callable[..., Any], *, name: str | None = None,
                 max_attempts: int = 1, retry_delay: float | timedelta = 1.0, priority: int = 0,
                 timeout: float | timedelta | None = None, retry_jitter: bool = False,
                 isolation: str | None = None, keep_result: float | timedelta | None = None,
                 concurrency: int | None = None, rate: str | None = None,
                 limit_key: Callable[[dict[str, Any]], Any] | None = None, fair: bool = False,
                 resources: Mapping[str, int] | None = None, batch: int | None = None,
                 batch_wait: float = 0.05) -> None:
        if not callable(fn):
            raise ConfigError(f"@q.job needs a function, got {fn!r}")
        self.queue = queue
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.max_attempts = limits.count(max_attempts, "max_attempts")
        self.retry_delay = limits.seconds(retry_delay, "retry_delay")
        self.priority = limits.priority(priority, limits.PRIORITY_RANGE[1])
        self.timeout = None if timeout is None else limits.seconds(timeout, "timeout")
        self.retry_jitter = retry_jitter
        self.isolation = check_isolation(isolation, f"@q.job {self.name}")
        self.keep_result = None if keep_result is None else limits.seconds(keep_result, "keep_result")
        where = f"@q.job {self.name}"
        self.concurrency = check_concurrency(concurrency, f"{where}: concurrency")
        self.rate = None if parse_rate(rate, f"{where}: rate") is None else rate
        self.limit_key = check_limit_key(limit_key, f"{where}: limit_key")
        self.fair = check_fair(fair, f"{where}: fair")
        if self.fair and self.limit_key is None:
            raise ConfigError(f"{where}: fair=True takes turns between the keys of limit_key; give "
                              "limit_key= too, like limit_key=lambda p: p['tenant']")
        self.resources = check_resources(resources, f"{where}: resources") or None
        self.batch_size, self.batch_wait = limits.check_batch(batch, batch_wait, where)
        if self.batch_size is not None and self.isolation == "process":
            raise ConfigError(f"{where}: a batched job runs in the worker; isolation='process' cannot be "
                              "combined with batch=")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        job_factories.register(self.name, self._rebuild)

    def __repr__(self) -> str:
        return f"<job function {self.name}{self.signature}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, in this cell, without the queue."""
        return self.fn(*args, **kwargs)

    def _rebuild(self, data: dict[str, Any]) -> FunctionCall:
        kwargs = data.get("kwargs")
        if not isinstance(kwargs, dict):
            raise SerializationError(f"payload of {self.name} has no 'kwargs' object")
        return self.make_call(kwargs)

    def make_call(self, kwargs: dict[str, Any]) -> FunctionCall:
        """The job of one call with ``kwargs`` (by parameter name), ready to dispatch."""
        cls = AsyncFunctionCall if self.is_async else SyncFunctionCall
        return cls(self, kwargs)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments as a dict by parameter name (defaults filled in); a clear error if they do not fit."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{self.name}{self.signature}: {exc}") from None
        bound.apply_defaults()
        params = dict(bound.arguments)
        for name, param in self.signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in params:
                params.update(params.pop(name))
        return params

    def first_parameter(self) -> str:
        """The name of the parameter a job run after others is given their output in."""
        for name, param in self.signature.parameters.items():
            if param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                return name
            break
        raise ConfigError(f"{self.name}{self.signature} cannot run after another job: its first parameter "
                          "gets the other job's result, so it needs one that can be passed by name")

    def bind_after(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments of a call that runs after other jobs: all but the first parameter,
        which their output fills when it runs; a clear error if they do not fit."""
        first = self.first_parameter()
        if first in kwargs:
            raise ConfigError(f"{self.name}: {first!r} is given the output of the jobs it runs after; "
                              "pass the other arguments only")
        params = self.bind((None,), kwargs)
        del params[first]
        return params

    def s(self, *args: Any, **kwargs: Any) -> Step:
        """This function with these arguments, as one step of ``kn.chain``: the first step
        takes all of its arguments, a later one all but its first (the step before gives it)."""
        from .workflows import Step

        return Step(self, args, kwargs)

    def key(self, kwargs: dict[str, Any]) -> str:
        """The point's identity in resumable sweeps: job name + canonical parameters, given
        encoded (``serializer.encode_arguments``)."""
        return canonical_key(self.name, kwargs)

    # -- dispatching -------------------------------------------------------------------------
    def dispatch(self, *args: Any, priority: int | None = None, delay: float | timedelta | None = None,
                 max_attempts: int | None = None, unique: bool | str | None = None,
                 unique_for: float | timedelta | None = None, unique_key: str | None = None,
                 on_conflict: str = "skip", after: Any = None, on_upstream_failure: str = "cancel",
                 **kwargs: Any) -> JobHandle:
        """Queue one call; returns a :class:`JobHandle` at once. ``unique=`` and its options
        work as in ``QueueManager.dispatch``: with ``on_conflict="skip"`` the handle is the
        job already queued or running with these arguments. ``after=`` (handles, groups or
        ids) makes it wait until they have ended; ``on_upstream_failure`` as in
        ``QueueManager.dispatch``."""
        return self.queue.dispatch_one(self, self.bind(args, kwargs), priority=priority, delay=delay,
                                       max_attempts=max_attempts, unique=unique, unique_for=unique_for,
                                       unique_key=unique_key, on_conflict=on_conflict, after=after,
                                       on_upstream_failure=on_upstream_failure)

    def map(self, calls: Iterable[Mapping[str, Any]], *, priority: int | None = None,
            delay: float | timedelta | None = None, max_attempts: int | None = None,
            fresh: bool = False, rerun_cancelled: bool = False,
            on_code_change: str = "warn", prune: Any = None) -> JobGroup:
        """Queue one call per dict of keyword arguments; returns a :class:`JobGroup`.
        ``prune`` (``kn.MedianPruner(...)``, ``kn.SuccessiveHalving(...)``): stop the calls
        that are clearly losing, from what they report (``features.pruning``)."""
        pruner = check_pruner(prune)
        points = [self.bind((), call) for call in calls]
        group = self.queue.submit(self, points, priority=priority, delay=delay,
                                  max_attempts=max_attempts, resumable=not fresh,
                                  rerun_cancelled=bool(rerun_cancelled), on_code_change=on_code_change,
                                  watched=pruner is not None)
        if pruner is not None:
            group.pruner = pruner
            self.queue.watch_pruning(group.ids, pruner)
        return group

    def optimize(self, space: Mapping[str, Any], *, metric: str, mode: str = "min", n_trials: int = 100,
                 parallel: int = 4, prune: Any = None, sampler: Any = None, name: str | None = None) -> Study:
        """Search ``space`` (``{"lr": kn.loguniform(1e-4, 1e-1), "depth": kn.intrange(2, 8),
        "opt": ["adam", "sgd"]}``) for the parameters that give the best ``metric``, ``mode``
        ``"min"`` or ``"max"``: Optuna (``sampler``, TPE by default) asks, the queue runs each
        trial as a job, ``parallel`` at a time, until ``n_trials`` have ended; ``prune`` stops
        losing trials (``kn.MedianPruner``, ``kn.SuccessiveHalving``, or one of Optuna's pruners,
        told each trial's reports). With ``name`` on a durable queue the study is
        found again after a kernel restart. Returns a :class:`Study` at once (``await study``,
        ``study.wait()``, ``study.best``, ``study.results()``, ``study.cancel()``)."""
        from .optimize import Study

        return Study(self, dict(space) if isinstance(space, Mapping) else space, metric=metric, mode=mode,
                     n_trials=n_trials, parallel=parallel, prune=prune, sampler=sampler,
                     name=name)

    def sweep(self, *, priority: int | None = None, delay: float | timedelta | None = None,
              max_attempts: int | None = None, fresh: bool = False, rerun_cancelled: bool = False,
              on_code_change: str = "warn", prune: Any = None, **grids: Iterable[Any]) -> JobGroup:
        """Queue the cartesian product of the given value lists, e.g. ``sweep(lr=[.1, .01], epochs=[1, 2])``.

        On a durable queue, running the same sweep again reuses points that already exist
        (finished or pending) and requeues failed ones; cancelled points stay cancelled unless
        ``rerun_cancelled=True`` (pruned points too); ``fresh=True`` runs every point anew.
        ``prune=kn.MedianPruner("val_loss")`` stops losing points (see :meth:`map`). Finished points computed
        by an older version of the function follow ``on_code_change``: ``"warn"`` reuses them
        and says how many, ``"rerun"`` runs them again, ``"keep"`` reuses them silently.
        """
        if not grids:
            raise ConfigError(f"{self.name}.sweep() needs at least one parameter grid, e.g. lr=[0.1, 0.01]")
        names = list(grids)
        values = []
        for name in names:
            grid = grids[name]
            if isinstance(grid, str | bytes) or not isinstance(grid, Iterable):
                raise ConfigError(f"sweep parameter {name!r} must be a list of values, got {grid!r}")
            values.append(list(grid))
        calls = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
        return self.map(calls, priority=priority, delay=delay, max_attempts=max_attempts, fresh=fresh,
                        rerun_cancelled=rerun_cancelled, on_code_change=on_code_change, prune=prune)

