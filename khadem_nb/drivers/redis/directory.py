"""Which queues the Redis driver looks in for a job: a job id does not name its queue.

Each queue's keys carry their own hash tag, so a job is found by asking queue after queue:
the driver's default queue first, then every other queue this driver has used, then the
queues registered in Redis. Every driver adds a queue to that registry (one set per key
prefix) the first time it dispatches there, so a process also finds jobs dispatched by
others to queues it never used itself. A miss costs one extra read per other queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from .keys import registry_key

T = TypeVar("T")
#: reads ``ids`` in one queue: a value per id, ``None`` where the queue does not hold it
Read = Callable[[str, Sequence[str]], Awaitable[Sequence[T | None]]]


class QueueDirectory:
    """The queues one driver knows of, in the order it searches them."""

    def __init__(self, prefix: str, default: str) -> None:
        self.key = registry_key(prefix)
        self.default = default
        self._known: dict[str, None] = {default: None}  # insertion-ordered: default first
        self._announced: set[str] = set()

    @property
    def known(self) -> list[str]:
        return list(self._known)

    def saw(self, queue: str) -> None:
        """Remember a queue this driver used (searched before the registry)."""
        self._known.setdefault(queue, None)

    def to_announce(self, queues: Iterable[str]) -> list[str]:
        """Of ``queues``, those this driver has not yet added to the registry."""
        return [q for q in dict.fromkeys(queues) if q not in self._announced]

    def announced(self, queues: Iterable[str]) -> None:
        self._announced.update(queues)

    def forget_announced(self) -> None:
        """The registry may have lost them (purge, a failed write): add queues again on their
        next dispatch (adding one twice is harmless)."""
        self._announced.clear()

    async def everywhere(self, registered: Callable[[], Awaitable[Iterable[str]]]) -> list[str]:
        """Every queue: the known ones, then the registered ones not known yet (now known)."""
        for queue in sorted(await registered()):
            self.saw(queue)
        return self.known

    async def find(self, ids: Sequence[str], read: Read[T],
                   registered: Callable[[], Awaitable[Iterable[str]]]) -> list[T | None]:
        """``read`` each id from the first queue that holds it (``None`` where none does)."""
        found: list[T | None] = [None] * len(ids)
        missing = list(range(len(ids)))
        missing = await self._search(ids, read, self.known, found, missing)
        if missing:
            searched = set(self.known)
            others = [q for q in await self.everywhere(registered) if q not in searched]
            await self._search(ids, read, others, found, missing)
        return found

    @staticmethod
    async def _search(ids: Sequence[str], read: Read[T], queues: Sequence[str],
                      found: list[T | None], missing: list[int]) -> list[int]:
        for queue in queues:
            if not missing:
                break
            values = await read(queue, [ids[i] for i in missing])
            still: list[int] = []
            for index, value in zip(missing, values, strict=True):
                if value is None:
                    still.append(index)
                else:
                    found[index] = value
            missing = still
        return missing
