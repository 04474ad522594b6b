"""Queue drivers: one abstract base class, one module per driver, imported lazily by name."""

from .base import QueueDriver

__all__ = ["QueueDriver"]
