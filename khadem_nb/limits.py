"""The ranges every setting and dispatch option must fall in, and the checks that enforce them.

Each check either returns the value normalised (seconds as ``float``, counts as ``int``) or
raises ``ConfigError`` naming the option, the value and the valid range, before anything is
stored. The ranges are wide enough for any real use and narrow enough that no driver, clock or
file name overflows inside them.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._time import seconds_of
from .errors import ConfigError

DAY_S = 86_400.0
YEAR_S = 365.25 * DAY_S

#: seconds: (lowest, highest), both included
DURATIONS: dict[str, tuple[float, float]] = {
    "queue.lease": (0.1, DAY_S),
    "queue.heartbeat": (0.05, DAY_S),
    "queue.connect_timeout": (0.1, 300.0),
    "queue.retention_age": (1.0, 10 * YEAR_S),
    "queue.failed_retention_age": (1.0, 10 * YEAR_S),
    "queue.artifact_grace": (0.0, 10 * YEAR_S),
    "delay": (0.0, 10 * YEAR_S),  # a dispatch's delay
    "worker delay": (0.001, 3600.0),  # the longest a worker waits for work between checks
    "timeout": (0.001, 10 * YEAR_S),  # a job's time limit, and a worker's run time
    "retry_delay": (0.0, 10 * YEAR_S),
    "grace": (0.0, DAY_S),
    "idle_timeout": (1.0, 30 * DAY_S),  # how long an autoscaled worker idles before it is retired
    "unique_for": (0.001, 10 * YEAR_S),  # how long a unique dispatch holds its key at most
    "keep_result": (0.0, 10 * YEAR_S),  # how long one job's finished record is kept at most
    "ttl": (0.001, 10 * YEAR_S),  # the lifetime of a value in a driver's keyed store
}
#: counts: (lowest, highest), both included
COUNTS: dict[str, tuple[int, int]] = {
    "queue.port": (1, 65_535),
    "queue.db": (0, 100_000),
    "queue.max_reclaims": (0, 1_000),
    "queue.retention": (0, 10**9),
    "queue.failed_retention": (0, 10**9),
    "max_jobs": (1, 10**12),
    "concurrency": (1, 10_000),
    "workers": (1, 10_000),  # launched at once
    "min": (0, 10_000),  # autoscaled workers kept at least
    "max": (1, 10_000),  # and at most
    "prefetch": (0, 10_000),
    "max_attempts": (1, 10_000),
    "queue.code_limit": (1024, 2**31),  # bytes of one shipped code envelope
    "--metrics-port": (1, 65_535),
    "--port": (1, 65_535),
}
#: the widest priority range any driver orders (a 64-bit integer); drivers may order less
PRIORITY_RANGE = (-(2**63) + 1, 2**63 - 1)


def seconds(value: Any, name: str, *, kind: str | None = None) -> float:
    """``value`` (seconds as int/float/str, or a ``timedelta``) within the range of ``kind``
    (a key of ``DURATIONS``; ``name`` itself by default); ``name`` is what errors call it."""
    low, high = DURATIONS[kind or name]
    if isinstance(value, str):  # settings read from a URL or an environment come as text
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    else:
        number = seconds_of(value, name=name)
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds, got {value!r}")
    return number


def count(value: Any, name: str) -> int:
    """``value`` as an ``int`` (an integer, or its digits as text) within ``name``'s range."""
    low, high = COUNTS[name]
    number = integer(value, name)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {number}")
    return number


def integer(value: Any, name: str) -> int:
    """``value`` as an ``int``: an integer (numpy's too), or its digits as text; never a bool,
    a float or anything else."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def priority(value: Any, limit: int) -> int:
    """A job's priority: an integer (not text) in ``[-limit, limit]``, the range of its driver."""
    if isinstance(value, str):
        raise ConfigError(f"priority must be an integer, got {value!r}")
    number = integer(value, "priority")
    if not -limit <= number <= limit:
        raise ConfigError(f"priority must be between {-limit} and {limit} on this driver, got {number}")
    return number


#: a queue name: a letter or digit, then letters, digits, ``_``, ``-`` and ``.``; at most 100
#: characters. Every driver can hold it as it is: never a path (no ``/``, never ``.`` or ``..``),
#: never a second separator in a Redis key (no ``:``), never a control character.
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
QUEUE_NAME_RULE = ("a letter or digit, then letters, digits, '_', '-' or '.', at most 100 characters "
                   "(no '/', ':', spaces or control characters)")
#: a Redis key prefix: 1 to 64 characters, none of them a brace (which would move a queue's hash
#: tag), a space or a control character
KEY_PREFIX = re.compile(r"[^{}\s\x00-\x1f\x7f]{1,64}\Z")


def queue_name(value: Any, name: str = "queue") -> str:
    """``value`` as a queue name that is safe on every driver (``QUEUE_NAME_RULE``), else a
    ``ConfigError`` naming the rule; ``name`` is what errors call the option."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a queue name (a non-empty string), got {value!r}")
    if not QUEUE_NAME.match(value):
        raise ConfigError(f"{name} {value!r} is not a valid queue name: use {QUEUE_NAME_RULE}")
    return value


def queue_names(values: Any, name: str = "queues") -> list[str]:
    """A list of queue names, each checked by ``queue_name``."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"{name} must be a list of queue names, got {values!r}")
    return [queue_name(v, name) for v in values]


def key_prefix(value: str) -> str:
    """A Redis key prefix (``queue.prefix``), checked."""
    if not KEY_PREFIX.match(value):
        raise ConfigError(f"queue.prefix {value!r} is not a valid key prefix: use 1 to 64 characters without "
                          "spaces or control characters, and without '{' or '}', which would give a "
                          "queue's keys different hash tags and split it across cluster slots")
    return value


#: the longest error message, traceback or progress note a record keeps, in characters
TEXT_LIMIT = 64 * 1024
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3,
              "gib": 1024**3}
SIZE_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*\Z")
#: bytes: (lowest, highest), both included
SIZES: dict[str, tuple[int, int]] = {"queue.max_payload": (1024, 2**31), "queue.inline_limit": (256, 2**31),
                                     "queue.max_artifact": (1024, 2**50)}


def cut_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and its end around a
    ``[... N characters cut ...]`` marker, ``limit`` characters in all (about)."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}\n[... {len(text) - 2 * keep} characters cut ...]\n{text[-keep:]}"


def size(value: Any, name: str) -> int:
    """A size in bytes: an integer, or text such as ``"16MiB"``, ``"512 kB"`` or ``"1000"``."""
    low, high = SIZES[name]
    if isinstance(value, str):
        match = SIZE_TEXT.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in SIZE_UNITS:
            raise ConfigError(f"{name} must be a size in bytes, like 16777216 or '16MiB' (units: "
                              f"{', '.join(u for u in SIZE_UNITS if u)}), got {value!r}")
        number = int(float(match.group(1)) * SIZE_UNITS[unit])
    else:
        number = integer(value, name)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high} bytes, got {number}")
    return number


# -- flow control: concurrency, rates and resource units (rules in features.flow) ------------
#: the window of a rate, in ms, by the unit its text names
RATE_UNITS = {"s": 1000, "sec": 1000, "second": 1000, "m": 60_000, "min": 60_000, "minute": 60_000,
              "h": 3_600_000, "hour": 3_600_000}
RATE_FORMS = "'N/s', 'N/min' or 'N/h' (also 'N/second', 'N/minute', 'N/hour'), N a whole number >= 1"
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
MAX_RATE = 1_000_000  # starts per window at most: the window's log is kept in full
MAX_UNITS = 1_000_000  # units of one resource a job asks for or a worker offers, at most
_RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``n`` starts in any window of ``window_ms``."""

    n: int
    window_ms: int

    def __str__(self) -> str:
        unit = {1000: "s", 60_000: "min", 3_600_000: "h"}[self.window_ms]
        return f"{self.n}/{unit}"


def parse_rate(value: Any, where: str = "rate") -> Rate | None:
    """``"30/min"`` as a ``Rate`` (``None`` stays ``None``); ``ConfigError`` naming the forms."""
    if value is None:
        return None
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in RATE_UNITS or not 1 <= int(match.group(1)) <= MAX_RATE:
        raise ConfigError(f"{where} must be {RATE_FORMS} (N at most {MAX_RATE}), got {value!r}")
    return Rate(int(match.group(1)), RATE_UNITS[match.group(2)])


def check_concurrency(value: Any, where: str = "concurrency") -> int | None:
    """A job kind's ``concurrency``: ``None`` or a whole number >= 1."""
    if value is None:
        return None
    highest = COUNTS["concurrency"][1]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= highest:
        raise ConfigError(f"{where} must be a whole number from 1 to {highest} "
                          f"(or None for no limit), got {value!r}")
    return value


def check_resources(value: Any, where: str = "resources") -> dict[str, int]:
    """Units of named resources: ``{"gpu": 1}``, names like identifiers, units whole numbers
    >= 1 (``{}`` or ``None``: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a dict of resource name -> units, like {{'gpu': 1}}, "
                          f"got {value!r}")
    checked: dict[str, int] = {}
    for name, units in value.items():
        if not isinstance(name, str) or not _RESOURCE_NAME.match(name):
            raise ConfigError(f"{where}: resource names are letters, digits, '_', '.' or '-' (not first), "
                              f"got {name!r}")
        if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS:
            raise ConfigError(f"{where}: units of {name!r} must be a whole number from 1 to {MAX_UNITS}, "
                              f"got {units!r}")
        checked[name] = units
    return dict(sorted(checked.items()))


def parse_resources(text: str, where: str = "--resources") -> dict[str, int]:
    """``"gpu=4,mem_gb=64"`` as ``{"gpu": 4, "mem_gb": 64}``; ``ConfigError`` naming the form."""
    pairs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, units = part.partition("=")
        if not sep or not units.strip().isdigit():
            raise ConfigError(f"{where} must be name=units pairs separated by commas, like "
                              f"'gpu=4,mem_gb=64', got {text!r}")
        pairs[name.strip()] = int(units)
    return check_resources(pairs, where)


# -- isolation --------------------------------------------------------------------------------
MAX_BATCH = 10_000  # jobs of one batched call at most
MAX_BATCH_WAIT_S = 60.0  # how long the first job of a batch waits for more, at most


def check_batch(size: Any, wait_s: Any, where: str) -> tuple[int | None, float]:
    """A batched kind's ``batch_size`` (``None``: not batched, else a whole number from 1 to
    MAX_BATCH) and ``batch_wait`` (seconds from 0 to MAX_BATCH_WAIT_S)."""
    whole = isinstance(size, int) and not isinstance(size, bool)
    if size is not None and not (whole and 1 <= size <= MAX_BATCH):
        raise ConfigError(f"{where}: batch size must be a whole number from 1 to {MAX_BATCH} (or None to run "
                          f"each job alone), got {size!r}")
    number = isinstance(wait_s, int | float) and not isinstance(wait_s, bool)
    if not (number and 0 <= wait_s <= MAX_BATCH_WAIT_S):
        raise ConfigError(f"{where}: batch wait must be seconds from 0 to {MAX_BATCH_WAIT_S:g}, "
                          f"got {wait_s!r}")
    return size, float(wait_s)


ISOLATIONS = ("none", "process")


def check_isolation(value: Any, where: str) -> str | None:
    """``value`` if it is a valid isolation (or ``None``: the worker's default), else
    ``ConfigError`` naming the valid ones."""
    if value is None or value in ISOLATIONS:
        return value  # type: ignore[no-any-return]
    raise ConfigError(f"{where}: isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")


# -- shipped code: the secret and the modules shipped by value (``runtime.shipping``) ---------
MIN_SECRET_BYTES = 16
SECRET_HELP = ("set KHADEM_SECRET in the environment, or queue.secret, or queue.secret_file (at least "
               f"{MIN_SECRET_BYTES} bytes, the same for the notebook and the workers that run its code)")


def checked_secret(secret: bytes | None, why: str) -> bytes:
    if secret is None:
        raise ConfigError(f"{why} needs a secret: {SECRET_HELP}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the code-shipping secret has {len(secret)} bytes; it needs at least "
                          f"{MIN_SECRET_BYTES} ({SECRET_HELP})")
    return secret


def ship_modules_of(value: Any) -> Sequence[str]:
    """``ship_modules`` as a list of module names; ``ConfigError`` for anything else."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"ship_modules must be a list of module names, got {value!r}")
    return tuple(names)
