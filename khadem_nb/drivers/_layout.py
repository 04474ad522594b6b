"""Storage layout versions: what opening a queue does with the layout it finds.

Every durable driver stores the version of its layout (PostgreSQL a table, SQLite
``PRAGMA user_version``, the file driver a ``layout`` file, Redis a key under its prefix); a
layout written before versions were stored is version 0. A release writes layout ``LAYOUT``
and works on layouts from ``OLDEST`` (the oldest its code reads and writes correctly) to
``LAYOUT + 1``: a layout only ever adds to the one before (tables, columns with defaults,
indexes, keys), so the release before a layout change runs on it beside the release that made
it (docs/upgrades.md). ``plan`` is the one place that decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SchemaVersionError

CREATE, UPGRADE, USE = "create", "upgrade", "use"


@dataclass(frozen=True)
class Layout:
    """A driver's layout versions: the one it writes, and the oldest it works on."""

    current: int
    oldest: int


def plan(found: int | None, layout: Layout, auto_migrate: bool, where: str) -> str:
    """What opening does with the layout version ``found`` at ``where`` (``None``: nothing
    stored yet): ``CREATE`` it, ``UPGRADE`` it (older, and ``auto_migrate``), or ``USE`` it as
    it is. ``SchemaVersionError`` naming both versions and what to run when this release
    cannot work on it."""
    if found is None:
        return CREATE
    if found > layout.current + 1:
        raise SchemaVersionError(
            f"the queue at {where} has storage layout version {found}, newer than this release of "
            f"khadem_nb knows (it writes {layout.current} and works on {layout.current + 1}); "
            "upgrade khadem_nb", found, layout.current)
    if found >= layout.current:
        return USE
    if auto_migrate:
        return UPGRADE
    if found < layout.oldest:
        raise SchemaVersionError(
            f"the queue at {where} has storage layout version {found}, older than this release of "
            f"khadem_nb works on ({layout.current}), and queue.auto_migrate is off: run "
            "`khadem-nb migrate --queue-url URL` (or `--sql` to see the statements first)",
            found, layout.current)
    return USE
