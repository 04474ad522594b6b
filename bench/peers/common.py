"""Shared by the peer modules: the bench Redis URL and the sentinel that marks a drain's end."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
DONE_KEY = "bench:done"


def mark_done() -> None:
    redis.Redis.from_url(URL).set(DONE_KEY, time.time())


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the bench environment's bin/)."""
    return str(Path(sys.executable).parent / name)
