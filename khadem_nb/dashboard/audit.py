"""The dashboard's audit log: every action and every refused action, who asked (which token,
named by its role and a fingerprint, never the token itself), what, on which jobs or queue,
when, from which address, and what came of it.

Entries live in the queue's keyed store (``audit/<nanoseconds>-<random>``, kept AUDIT_TTL_S), so every
dashboard of a queue writes to one log and ``/audit`` of any of them shows it; at most
AUDIT_KEPT entries are kept (the oldest go first, checked every AUDIT_TRIM_EVERY writes).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..drivers.base import QueueDriver

AUDIT_KEY = "audit/"
AUDIT_TTL_S = 90 * 86_400.0
AUDIT_KEPT = 10_000
AUDIT_TRIM_EVERY = 200
AUDIT_SHOWN = 200  # entries /api/audit answers, newest first


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    who: str  # "admin 1a2b3c4d", "read-only 5e6f7a8b", "no token", "wrong token"
    action: str  # the route: "POST /api/jobs/{job_id}/retry"
    target: str  # the job id, the queue, or "" for queue-wide actions
    outcome: str  # "done: ...", or "refused: why"
    client: str


def fingerprint(token: str) -> str:
    """A token's short name in the log: its digest's first 8 hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class AuditLog:
    """Writes and reads the audit entries of one dashboard's queue."""

    def __init__(self, driver: QueueDriver) -> None:
        self.driver = driver
        self._written = 0

    async def record(self, entry: AuditEntry) -> None:
        key = f"{AUDIT_KEY}{time.time_ns():020d}-{secrets.token_hex(4)}"  # ordered to the nanosecond
        await self.driver.kv_put(key, json.dumps(asdict(entry)).encode(), ttl_s=AUDIT_TTL_S)
        self._written += 1
        if self._written % AUDIT_TRIM_EVERY == 0:
            await self.trim()

    async def trim(self) -> int:
        """Drop the oldest entries beyond AUDIT_KEPT; how many went."""
        keys = sorted(await self.driver.kv_scan(AUDIT_KEY))
        extra = keys[:max(0, len(keys) - AUDIT_KEPT)]
        for key in extra:
            await self.driver.kv_delete(key)
        return len(extra)

    async def newest(self, limit: int = AUDIT_SHOWN) -> list[dict[str, Any]]:
        found = await self.driver.kv_scan(AUDIT_KEY)
        entries = []
        for key in sorted(found, reverse=True)[:limit]:
            try:
                entries.append(json.loads(found[key]))
            except ValueError:
                continue  # a damaged entry is passed over
        return entries
