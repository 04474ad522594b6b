"""Shared by the PostgreSQL peers: the database each engine uses (one per engine, made afresh
for every measurement by bench/postgres_peers.py). The drain's end is stamped in Redis, as in
the Redis bench (bench/peers/common.py), the same few hundred nanoseconds for every engine."""

from __future__ import annotations

import os

BASE_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def database_url(engine: str) -> str:
    """The URL of ``engine``'s own database on the bench server."""
    root = BASE_URL.rsplit("/", 1)[0]
    return f"{root}/bench_{engine}"
