"""``QueueFactory``: the seed's front door to both registries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .drivers.registry import DriverFactory, driver_registry
from .registry import JobFactory, job_factories

if TYPE_CHECKING:
    from .config import QueueSettings
    from .drivers.base import QueueDriver


class QueueFactory:
    """Registers drivers and job factories, and resolves drivers from settings."""

    @staticmethod
    def register_driver(name: str, driver_or_factory: DriverFactory | QueueDriver) -> None:
        driver_registry.register(name, driver_or_factory)

    @staticmethod
    def register_job_factory(name: str, factory: JobFactory) -> None:
        job_factories.register(name, factory)

    @staticmethod
    def resolve(settings: QueueSettings) -> QueueDriver:
        return driver_registry.create(settings.driver, settings)

    @staticmethod
    def driver_names() -> list[str]:
        return driver_registry.names()

    @staticmethod
    def job_names() -> list[str]:
        return job_factories.names()
