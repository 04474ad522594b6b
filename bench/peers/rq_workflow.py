"""RQ's side of bench/workflows.py: a point, and the dependent that stamps when it starts."""

from __future__ import annotations

import os
import time

from redis import Redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def point(i: int) -> int:
    return i


def reduce_stamp() -> None:
    Redis.from_url(URL).set("bench:reduce_started", time.time())
