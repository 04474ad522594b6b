"""Small terminal helpers for the CLI: a progress bar and plain-text tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


class ProgressBar:
    """A one-line progress bar redrawn in place, at most ten times a second."""

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        fraction = min(1.0, done / self.total)
        filled = int(fraction * self.width)
        rate = done / max(1e-9, now - self._started)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {fraction:4.0%} "
                          f"{rate:7.1f} jobs/s {extra}")
        self.stream.flush()

    def close(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        self.stream.write("\n")
        self.stream.flush()


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned text table."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in columns]
    lines += ["  ".join(v.rjust(w) if num else v.ljust(w)
                        for v, w, num in zip(r, widths, numeric, strict=True)) for r in cells]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    return format_table([{"metric": k, "value": v} for k, v in metrics.items()])
