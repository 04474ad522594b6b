"""Runs each job inside ``dispatch``, through the same executor a worker uses.

Callbacks, middleware, retries and metrics behave as with a worker. Delays, including retry
backoff, are not waited for: a job and its retries run to the end before ``dispatch`` returns
(like Celery's eager mode), so tests and scripts stay fast and deterministic.
"""

from __future__ import annotations

from typing import ClassVar

from .memory import MemoryDriver


class SyncDriver(MemoryDriver):
    """A memory driver whose jobs run at dispatch."""

    runs_at_dispatch: ClassVar[bool] = True

    _honours_delay: ClassVar[bool] = False
    _honours_limits: ClassVar[bool] = False
