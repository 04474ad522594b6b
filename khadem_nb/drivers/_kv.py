"""What every driver's keyed store shares: the checks of a key, a value and a lifetime.

The keyed store (``QueueDriver.kv_put`` and the rest) keeps bytes under short text keys, each
with an optional lifetime, in the queue's own storage, for features that need state beside the
jobs. A driver stores bytes only; a caller that keeps JSON encodes it itself, so each driver's
store stays one table, folder, dict or set of keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import limits
from ..errors import ConfigError

MAX_KEY = 256  # characters of a key: room for a prefix and a 200-character name


def check_key(key: Any) -> str:
    """A key: 1 to MAX_KEY characters, none of them a control character."""
    control = isinstance(key, str) and any(ord(c) < 32 or c == "\x7f" for c in key)
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or control:
        raise ConfigError(f"a keyed-store key must be 1 to {MAX_KEY} characters without control characters, "
                          f"got {key!r}")
    return key


def check_prefix(prefix: Any) -> str:
    """A scan's prefix: a key's start, or ``""`` for every key."""
    return prefix if prefix == "" else check_key(prefix)


def check_value(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ConfigError("a keyed-store value must be bytes (encode JSON yourself), "
                          f"got {type(value).__name__}")
    return bytes(value)


def check_ttl(ttl_s: Any) -> float | None:
    """A lifetime in seconds, or ``None`` for none."""
    return None if ttl_s is None else limits.seconds(ttl_s, "ttl")


def expiry(now_ms: int, ttl_s: float | None) -> int | None:
    """When a value put now with lifetime ``ttl_s`` (seconds, or ``None``: none) expires."""
    return None if ttl_s is None else now_ms + max(1, int(ttl_s * 1000))


def live(expires_ms: int | None, now_ms: int) -> bool:
    return expires_ms is None or now_ms < expires_ms


def scan_end(prefix: str) -> str:
    """The first text after every key that starts with ``prefix`` (for range scans)."""
    return prefix + "\U0010ffff"


def rules_of(prefix: str, found: Mapping[str, bytes]) -> dict[str, str]:
    """The lane rules among keyed-store values under ``prefix`` (``rules/<queue>/``): job name ->
    rule text; a value that is not text is passed over (the records' own rules apply)."""
    rules = {}
    for key, value in found.items():
        try:
            rules[key[len(prefix):]] = value.decode()
        except UnicodeDecodeError:
            continue
    return rules
