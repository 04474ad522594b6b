"""The registry of drivers by name: the built-in ones, imported when first resolved, and
those an application registers (``QueueFactory.register_driver``)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import QueueDriver

if TYPE_CHECKING:
    from ..config import QueueSettings

DriverFactory = Callable[["QueueSettings"], QueueDriver]

# Built-in drivers: registry key = module name under khadem_nb.drivers, class <Name>Driver.
BUILTIN_DRIVERS: dict[str, str] = {
    "sync": "khadem_nb.drivers.sync:SyncDriver",
    "memory": "khadem_nb.drivers.memory:MemoryDriver",
    "file": "khadem_nb.drivers.file:FileDriver",
    "sqlite": "khadem_nb.drivers.sqlite:SqliteDriver",
    "redis": "khadem_nb.drivers.redis:RedisDriver",
    "postgres": "khadem_nb.drivers.postgres:PostgresDriver",
}


class QueueDriverRegistry:
    """Maps driver names to factories; built-ins are imported only when first resolved."""

    def __init__(self) -> None:
        self._custom: dict[str, DriverFactory | QueueDriver] = {}
        self._lock = threading.Lock()

    def register(self, name: str, driver_or_factory: DriverFactory | QueueDriver) -> None:
        """Register a driver instance, a driver class, or a callable ``(settings) -> driver``."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"driver name must be a non-empty string, got {name!r}")
        with self._lock:
            self._custom[name] = driver_or_factory

    def unregister(self, name: str) -> None:
        """Forget the driver registered under ``name``."""
        with self._lock:
            self._custom.pop(name, None)

    def names(self) -> list[str]:
        """The registered driver names, sorted."""
        return sorted(set(BUILTIN_DRIVERS) | set(self._custom))

    def create(self, name: str, settings: QueueSettings) -> QueueDriver:
        """Build the driver registered as ``name`` for ``settings``."""
        entry = self._custom.get(name)
        if entry is None and name in BUILTIN_DRIVERS:
            entry = _import_builtin(BUILTIN_DRIVERS[name])
        if entry is None:
            raise ConfigError(f"unknown queue driver {name!r}; valid drivers: {', '.join(self.names())}")
        if isinstance(entry, QueueDriver):
            return entry
        driver = entry(settings)
        if not isinstance(driver, QueueDriver):
            raise ConfigError(f"driver factory for {name!r} returned {driver!r}, not a QueueDriver")
        return driver


def _import_builtin(spec: str) -> DriverFactory:
    module_name, _, attr = spec.partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), attr)
    return factory


driver_registry = QueueDriverRegistry()
