"""``khadem-nb migrate``: bring a queue's storage layout to this release's (docs/upgrades.md),
or, with ``--sql``, print the statements that would do it, for a DBA to read or run."""

from __future__ import annotations

import dataclasses
import sys
from typing import TextIO

from ..config import parse_config
from ..factory import QueueFactory


async def run_migrate(url: str, sql: bool = False, stream: TextIO | None = None) -> int:
    """Upgrade (or with ``sql`` print the statements for) the queue at ``url``; 0 once done.
    Errors of the tree (an unreachable server, a layout newer than this release) propagate:
    the command prints them and exits 1, nothing changed."""
    out = stream or sys.stdout
    settings = dataclasses.replace(parse_config(url), auto_migrate=True)
    driver = QueueFactory.resolve(settings)
    where = settings.redacted_url()
    if sql:
        statements = await driver.layout_statements()
        if not statements:
            out.write(f"-- {where}: the layout is this release's (version {driver.layout.current}) or "
                      "newer; nothing to run\n")
        for statement in statements:
            out.write(f"{statement};\n")
        return 0
    try:
        await driver.open()
    finally:
        await driver.close()
    change = driver.layout_change
    if change is None:
        out.write(f"{where}: layout version {driver.layout.current} or one it works on; nothing to do\n")
    elif change[0] is None:
        out.write(f"{where}: created at layout version {change[1]}\n")
    else:
        out.write(f"{where}: layout version {change[0]} -> {change[1]}\n")
    return 0
