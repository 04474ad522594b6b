"""Where a worker says it is: its entry in the queue's keyed store, and its retirement.

Every worker writes ``workers/<name>`` (JSON: host, pid, launcher, queues, concurrency,
resources, state, jobs done, started, last seen) when it starts, every ``PRESENCE_EVERY_S``
and when it stops; ``QueueManager.workers()`` reads them all, from any process. An entry
outlives its worker by ``PRESENCE_TTL_S`` so that a worker that vanished shows as ``gone``
rather than not at all. ``retire/<name>`` (or ``retire/all``), written by
``QueueManager.retire``, asks a worker started before it to finish the jobs in hand and exit.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from .._time import now_ms
from ..drivers.base import QueueDriver
from ..errors import ConfigError

PRESENCE_PREFIX = "workers/"
RETIRE_PREFIX = "retire/"
PRESENCE_EVERY_S = 5.0  # how often a worker writes its entry
PRESENCE_TTL_S = 3600.0  # how long an entry outlives its last write
GONE_AFTER_MS = int(3 * PRESENCE_EVERY_S * 1000)  # an entry not written for this long: gone
NAME_ENV = "KHADEM_WORKER_NAME"  # a launcher names the worker it starts
LAUNCHER_ENV = "KHADEM_LAUNCHER"  # and says which launcher it is
EXPECTED_ENV = "KHADEM_EXPECTED_ENV"  # and gives the launching process's versions (JSON)


def worker_name() -> str:
    """The name a worker gives itself: its launcher's, else host and process id."""
    return os.environ.get(NAME_ENV) or f"{socket.gethostname()}-{os.getpid()}"


def entry(name: str, *, state: str, started_ms: int, queues: list[str], concurrency: int,
          resources: Mapping[str, int], jobs_done: int, launcher: str | None = None,
          runs: list[str] | None = None, trusts_code: bool = False) -> dict[str, Any]:
    """A worker's entry as it writes it, its Python environment included (``environment``):
    ``runs``, the job names it has factories for, and ``trusts_code``, whether it runs
    shipped code (what ``why_waiting`` reads)."""
    return {"name": name, "host": socket.gethostname(), "pid": os.getpid(),
            "launcher": launcher or os.environ.get(LAUNCHER_ENV) or "manual", "state": state,
            "queues": queues, "concurrency": concurrency, "resources": dict(resources),
            "jobs_done": jobs_done, "started": started_ms, "last_seen": now_ms(),
            "runs": runs or [], "trusts_code": trusts_code, **environment()}


@cache
def environment() -> dict[str, Any]:
    """This process's Python version and installed distributions (lower-cased name -> version),
    read once."""
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages[str(name).lower()] = dist.version
    return {"python": platform.python_version(), "packages": packages}


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any], names: Iterable[str], *,
                ours_is: str, theirs_is: str) -> list[str]:
    """Where the environment ``theirs`` (``{"python", "packages"}``) differs from ``ours``, for
    the Python version and the distributions ``names`` that ``ours`` has, one item a
    difference: ``numpy 2.1.0 <theirs_is>, 2.2.1 <ours_is>``."""
    found = []
    if ours.get("python") and theirs.get("python") and theirs["python"] != ours["python"]:
        found.append(f"Python {theirs['python']} {theirs_is}, {ours['python']} {ours_is}")
    packages, reference = theirs.get("packages"), ours.get("packages")
    if isinstance(packages, Mapping) and isinstance(reference, Mapping):
        for name in sorted(set(names)):
            expected, found_there = reference.get(name), packages.get(name)
            if expected is not None and expected != found_there:
                found.append(f"{name} {found_there or 'missing'} {theirs_is}, {expected} {ours_is}")
    return found


def env_diff(theirs: Mapping[str, Any], imported: Iterable[str]) -> str:
    """How a worker's environment (its entry) differs from this process's, for the Python
    version and the distributions this process imported: ``numpy 2.1.0 there, 2.2.1 here``."""
    return "; ".join(differences(environment(), theirs, imported, ours_is="here", theirs_is="there"))


def expected_environment() -> dict[str, Any]:
    """What a launch asks its workers to match: this process's Python version and the versions
    of the distributions it imported."""
    mine = environment()
    return {"python": mine["python"],
            "packages": {name: mine["packages"][name] for name in sorted(imported_distributions())
                         if name in mine["packages"]}}


def check_launch_environment(strict: bool) -> list[str]:
    """At a launched worker's start: how its environment differs from what its launch expected
    (``EXPECTED_ENV``, taken out of the environment); ``ConfigError`` under ``strict``."""
    raw = os.environ.pop(EXPECTED_ENV, None)
    try:
        expected = json.loads(raw) if raw else {}
    except ValueError:
        expected = {}
    found = (differences(expected, environment(), expected.get("packages") or {},
                         ours_is="in the notebook", theirs_is="here")
             if isinstance(expected, dict) else [])
    if found and strict:
        raise ConfigError("this worker's environment differs from the one that launched it and "
                          f"strict_versions is on: {'; '.join(found)}")
    return found


def imported_distributions() -> set[str]:
    """The distributions (lower-cased names) of the top-level packages this process imported."""
    tops = {name.split(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
    owners = importlib.metadata.packages_distributions()
    return {dist.lower() for top in tops for dist in owners.get(top, [])}


async def announce(driver: QueueDriver, found: Mapping[str, Any], *, only_new: bool = False) -> None:
    """Write a worker's entry; with ``only_new``, only where it has none yet."""
    key, value = f"{PRESENCE_PREFIX}{found['name']}", json.dumps(found).encode()
    if only_new:
        await driver.kv_put_new(key, value, ttl_s=PRESENCE_TTL_S)
    else:
        await driver.kv_put(key, value, ttl_s=PRESENCE_TTL_S)


async def retire_asked(driver: QueueDriver, name: str, started_ms: int) -> bool:
    """Whether a retirement was asked of this worker (by name, or of all) since it started."""
    for key in (f"{RETIRE_PREFIX}{name}", f"{RETIRE_PREFIX}all"):
        asked = await driver.kv_get(key)
        if asked is not None and int(asked) >= started_ms:
            return True
    return False


async def ask_retire(driver: QueueDriver, name: str) -> None:
    """Ask the worker ``name`` (``"all"``: every worker running now) to finish and exit."""
    await driver.kv_put(f"{RETIRE_PREFIX}{name}", str(now_ms()).encode(), ttl_s=PRESENCE_TTL_S)


def _ms(value: Any) -> int:
    """A time an entry holds, in epoch ms; 0 (long ago) where it does not read as one."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


async def read_entries(driver: QueueDriver) -> list[dict[str, Any]]:
    """Every worker's entry, its state ``gone`` where it has not written for GONE_AFTER_MS."""
    now = now_ms()
    found = []
    for raw in (await driver.kv_scan(PRESENCE_PREFIX)).values():
        try:
            item = json.loads(raw)
        except ValueError:  # a damaged entry hides nothing else
            continue
        if not isinstance(item, dict) or "name" not in item:
            continue
        state = item.get("state")
        if state == "starting":  # written by its launcher: gone once its start timeout has passed
            if now > _ms(item.get("until")):
                item["state"] = "gone"
        elif state not in ("gone", "failed") and now - _ms(item.get("last_seen")) > GONE_AFTER_MS:
            item["state"] = "gone"
        found.append(item)
    return sorted(found, key=lambda item: (str(item.get("started")), str(item["name"])))
