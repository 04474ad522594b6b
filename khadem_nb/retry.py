"""Backoff policies: how long to wait before the next attempt of a failed job."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class BackoffPolicy(Protocol):
    """Maps the number of the attempt that just failed (1-based) to a delay in seconds."""

    def delay_s(self, attempt: int) -> float: ...


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """``base_s * factor ** (attempt - 1)``, capped at ``max_s``.

    With ``jitter`` the delay is drawn uniformly from ``[delay / 2, delay]`` so that many jobs
    failing together do not retry in lockstep.
    """

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: bool = False

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1 for the first)."""
        delay = min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))
        return random.uniform(delay / 2, delay) if self.jitter else delay


@dataclass(frozen=True, slots=True)
class FixedBackoff:
    """The same delay before every retry."""

    base_s: float = 1.0

    def delay_s(self, attempt: int) -> float:
        """``base_s``, whatever the attempt."""
        return self.base_s
