"""Job ids and claim tokens: unique across processes and machines without a syscall each.

Each is a random per-process prefix followed by a counter. The prefix is drawn again in a
forked child, so two processes never share one. Job ids are 32 hex digits (an 80-bit random
prefix and a 48-bit counter), the shape of ``uuid4().hex``. The jobs of one process share
the prefix, so a short form for people (:func:`short_id`) shows a little of the prefix and the
end of the counter.
"""

from __future__ import annotations

import itertools
import os
from typing import Any


class _Source:
    """A random prefix and a counter; ``next_id`` is safe across threads (``next`` is atomic)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(10).hex()
        self._token_prefix = self.prefix + "-"
        self.counter = itertools.count(1)

    def job_id(self) -> str:
        return self.prefix + (next(self.counter) & 0xFFFFFFFFFFFF).to_bytes(6, "big").hex()

    def token(self) -> str:
        return self._token_prefix + str(next(self.counter))


_source = _Source()

#: 32 hex digits, unique across processes (random prefix per process, then a counter)
new_job_id = _source.job_id
#: a claim token unique across processes
new_token = _source.token


def short_id(job_id: str) -> str:
    """A job id as people read it in tables, 8 digits like a short git hash: the first 4
    (which process made it) and the last 4 (which of its jobs), e.g. ``3f9a002a`` for
    ``3f9a...00000000002a``. Ids of another shape are cut to 8."""
    if len(job_id) == 32:
        return job_id[:4] + job_id[-4:]
    return job_id[:8]


def job_ids(value: Any, caller: str) -> list[str]:
    """One id or an iterable of ids as a list of distinct ids, in order; ``ConfigError`` for
    anything that is not a non-empty string, and for no ids at all."""
    from .errors import ConfigError

    if isinstance(value, str):
        values: list[Any] = [value]
    elif isinstance(value, bytes) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{caller} takes a job id (a string) or a list of them, got {value!r}")
    else:
        values = list(value)
    if not values:
        raise ConfigError(f"{caller} was given no job ids")
    for item in values:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{caller}: job ids are non-empty strings, got {type(item).__name__} {item!r}")
    return list(dict.fromkeys(values))
