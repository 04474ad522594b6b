"""Waiters in this process by job id, told of settles that another process made (the drivers
that hear them: Redis, PostgreSQL)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from ..job import JobStatus
from .base import SettleNotice


class SettleWatchers:
    """The notices registered per job id."""

    def __init__(self) -> None:
        self._by_id: dict[str, list[SettleNotice]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._by_id

    def add(self, job_ids: Sequence[str], notice: SettleNotice) -> Callable[[], None]:
        """Call ``notice`` when any of ``job_ids`` is told; returns an unwatch."""
        for job_id in job_ids:
            self._by_id.setdefault(job_id, []).append(notice)

        def unwatch() -> None:
            for job_id in job_ids:
                notices = self._by_id.get(job_id)
                if notices is not None:
                    with contextlib.suppress(ValueError):
                        notices.remove(notice)
                    if not notices:
                        del self._by_id[job_id]

        return unwatch

    def tell(self, job_id: str, status: JobStatus | None, result: Any) -> None:
        for notice in list(self._by_id.get(job_id, ())):
            notice(job_id, status, result)
