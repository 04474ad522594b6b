"""Task helpers for the loops every worker runs beside its jobs."""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` when the running task is being cancelled.

    A loop that survives storage faults (``except Exception``) calls this first in its
    handler: a client library may turn the cancel that stops the loop into an error of its
    own (a connection closed mid-command), and swallowing that would keep the loop alive after
    its worker stopped."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
