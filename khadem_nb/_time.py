"""Time helpers: one place that turns ``float | timedelta`` into seconds, and wall-clock ms."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from .errors import ConfigError

Duration = float | int | timedelta


def seconds_of(value: object, *, name: str = "duration") -> float:
    """A duration given as seconds (int or float) or a ``timedelta``, as float seconds; any
    other type is a ``ConfigError``. Ranges are checked by the caller (``limits.seconds``)."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be seconds (int or float) or a timedelta, got {value!r}")
    return float(value)


def to_seconds(value: Duration | None, *, name: str = "duration") -> float | None:
    """Normalise a wait's duration (no upper bound); ``None`` passes through."""
    if value is None:
        return None
    seconds = seconds_of(value, name=name)
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be a non-negative duration, got {value!r}")
    return seconds


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int | None) -> datetime | None:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
