"""Route a running job's prints and log lines into its record instead of the current cell
(in a notebook) or the worker's own output (in ``khadem-nb worker``).

``install()`` swaps ``sys.stdout``/``sys.stderr`` for proxies that look at the job context:
text written while a job runs (on the loop or in its thread) goes to that job's output; any
other text goes where it always went. A logging handler does the same for log records.
``uninstall()`` puts everything back. Installs nest: the last uninstall restores.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from .context import current_job


class JobAwareStream:
    """A text stream that sends writes made inside a job to the job's output."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        context = current_job.get()
        if context is None:
            return self.target.write(text)
        context.write_output(text)
        return len(text)

    def flush(self) -> None:
        if current_job.get() is None:
            self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class JobLogHandler(logging.Handler):
    """Appends formatted log records emitted inside a job to that job's output."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        context = current_job.get()
        if context is not None and not record.name.startswith("khadem_nb"):
            context.write_output(self.format(record) + "\n")


_lock = threading.Lock()
_installs = 0
_saved: tuple[TextIO, TextIO] | None = None
_handler = JobLogHandler()


def install() -> None:
    global _installs, _saved
    with _lock:
        _installs += 1
        if _installs > 1:
            return
        _saved = (sys.stdout, sys.stderr)
        sys.stdout = JobAwareStream(sys.stdout)
        sys.stderr = JobAwareStream(sys.stderr)
        logging.getLogger().addHandler(_handler)


def uninstall() -> None:
    global _installs, _saved
    with _lock:
        if _installs == 0:
            return
        _installs -= 1
        if _installs or _saved is None:
            return
        if isinstance(sys.stdout, JobAwareStream):
            sys.stdout = _saved[0]
        if isinstance(sys.stderr, JobAwareStream):
            sys.stderr = _saved[1]
        _saved = None
        logging.getLogger().removeHandler(_handler)
