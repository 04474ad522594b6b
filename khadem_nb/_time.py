"""Time helpers: one place that turns ``float | timedelta`` into seconds, and wall-clock ms."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from .errors import ConfigError

Duration = float | int | timedelta


def to_seconds(value: Duration | None, *, name: str = "duration") -> float | None:
    """Normalise a duration given as seconds or ``timedelta``; ``None`` passes through."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be seconds (int/float) or a timedelta, got {value!r}")
    else:
        seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be a non-negative duration, got {value!r}")
    return seconds


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int | None) -> datetime | None:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
