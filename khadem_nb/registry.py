"""The registry of job factories by job name (the drivers' registry is ``drivers.registry``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .job import QueueJob

JobFactory = Callable[[dict[str, Any]], "QueueJob"]


class JobFactoryRegistry:
    """Maps job names to callables that rebuild a job from its JSON payload."""

    def __init__(self) -> None:
        self._factories: dict[str, JobFactory] = {}
        self._lock = threading.Lock()
        #: the factory registered for a name, or ``None`` (the dict's own ``get``: a worker
        #: looks one up for every job)
        self.get: Callable[[str], JobFactory | None] = self._factories.get
        #: the names whose job class or job function has a ``batch_size`` (a worker asks this of
        #: every job it claims: one set lookup)
        self.batched: set[str] = set()
        #: counts the changes, so that what is derived from the names is made again only then
        self.version = 0

    def register(self, name: str, factory: JobFactory) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"job name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise ConfigError(f"job factory for {name!r} must be callable, got {factory!r}")
        owner = getattr(factory, "__self__", None)  # a job class's from_json, a job function's _rebuild
        with self._lock:
            self._factories[name] = factory  # a re-run notebook cell replaces its own definition
            self.version += 1
            if getattr(owner, "batch_size", None) is not None:
                self.batched.add(name)
            else:
                self.batched.discard(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._factories.pop(name, None)
            self.batched.discard(name)
            self.version += 1

    def names(self) -> list[str]:
        return sorted(self._factories)


job_factories = JobFactoryRegistry()
