"""What a worker can run: the job names it has factories for, and whether it runs shipped code.

A claim takes only jobs the claiming worker can run (``Runs``, given to ``QueueDriver.reserve``
and checked inside the claim's own atomic step), so that in a mixed fleet (a GPU box running
``train``, a CPU box running ``preprocess``, a notebook's in-kernel workers running its own
cells, old and new versions side by side during a deploy) no worker takes a job it lacks and
no job fails because one worker lacks it. ``runtime.kinds`` decides when a worker needs the
filter at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Runs:
    """The jobs a claiming worker can run: those named in ``names``, and with ``shipped`` the
    jobs that run shipped code (their ``code`` carries a seal after a dot)."""

    names: frozenset[str]
    shipped: bool = False

    def allows(self, name: str, code: str | None) -> bool:
        return name in self.names or (self.shipped and code is not None and "." in code)


def needed_filter(kinds: Mapping[str, bool], runs: Runs) -> Runs | None:
    """``runs`` where ``kinds`` (name -> whether it runs shipped code) hold one it cannot run,
    else ``None``: the worker claims without a filter."""
    for name, shipped in kinds.items():
        if name not in runs.names and not (shipped and runs.shipped):
            return runs
    return None
