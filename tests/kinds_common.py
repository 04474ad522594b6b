"""What the fleet tests' job kinds share: a run appends ``<word> <n> <pid>`` to a log file (one
line a run, so a test counts how often each job ran and where) and returns the pid."""

from __future__ import annotations

import os
from typing import Any, ClassVar


class LoggedRun:
    word: ClassVar[str] = "run"

    def __init__(self, n: int, log: str) -> None:
        self.n = n
        self.log = log

    async def handle(self) -> Any:
        with open(self.log, "a") as out:
            out.write(f"{self.word} {self.n} {os.getpid()}\n")
        return os.getpid()
