"""The job kinds dispatched to each queue, and when a worker's claims need a ``Runs`` filter.

A claim filtered by what the worker runs (``features.capabilities``) costs something on every
driver, so a worker claims without a filter while it can run every job kind of its queues.
The kinds live in the keyed store, one key per queue, way of running and name
(``kinds/<queue>/plain|shipped/<name>``), written once per process by the first dispatch of a
kind (``KindNotes``), before the job itself, so a worker that reads them has seen every kind it
may claim. A kind dispatched by a process that writes none (an earlier release), or whose name
is too long for a key, is found when a worker claims such a job and has no factory for it: the
worker writes the kind and gives the job back without spending an attempt (``WorkerKinds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..drivers._kv import MAX_KEY
from ..drivers.base import QueueDriver
from ..features.capabilities import Runs, needed_filter
from ..features.flow import NO_RULE, kind_of_lane
from ..job import JobRecord
from ..registry import JobFactoryRegistry

if TYPE_CHECKING:
    from .execution import JobExecutor

logger = logging.getLogger(__name__)

KINDS_KEY = "kinds/"  # the keyed store's prefix of the job kinds dispatched to each queue
PLAIN, SHIPPED = "plain", "shipped"  # how a kind runs: from a factory, or from shipped code
READ_EVERY_S = 2.0  # how often a worker reads its queues' kinds again
SHOWN_NAMES = 12  # names a reason lists at most


def shipped(code: str | None) -> bool:
    """Whether a job's ``code`` carries a seal: it runs shipped code (``shipping``)."""
    return code is not None and "." in code


def kind_key(queue: str, name: str, runs_shipped: bool) -> str | None:
    """The key noting that jobs named ``name`` are dispatched to ``queue`` (``None`` for a name
    too long for a key: such a kind is found by the claims instead)."""
    key = f"{KINDS_KEY}{queue}/{SHIPPED if runs_shipped else PLAIN}/{name}"
    return key if len(key) <= MAX_KEY else None


def parse_kinds(queue: str, keys: Iterable[str]) -> dict[str, bool]:
    """The kinds noted for ``queue``: name -> whether every dispatch of it shipped its code.
    A key that does not read as a kind is passed over."""
    prefix = f"{KINDS_KEY}{queue}/"
    kinds: dict[str, bool] = {}
    for key in keys:
        mode, _, name = key[len(prefix):].partition("/")
        if key.startswith(prefix) and name and mode in (PLAIN, SHIPPED):
            kinds[name] = kinds.get(name, True) and mode == SHIPPED
    return kinds


class Kinded(Protocol):
    """A job record or draft: what names its kind, and its lane."""

    @property
    def queue(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def code(self) -> str | None: ...

    @property
    def lane(self) -> str | None: ...

    @property
    def lane_rule(self) -> str | None: ...


def kind_rule_of(job: Kinded) -> str | None:
    """The lane rule of ``job``'s kind that its dispatch carries (``NO_RULE`` for a kind
    without limits); ``None`` where its lane is not its kind's (a ``unique="running"`` key's, a
    schedule's), which says nothing of the kind's rule."""
    lane = job.lane
    if lane is None:
        return NO_RULE
    return job.lane_rule if kind_of_lane(lane) == job.name else None


class KindNotes:
    """A dispatching process's notes of the kinds it dispatched: each kind written once, and
    its lane rule (``flow``) whenever this process's differs from the one it wrote last, so that
    a cell run again with a new ``concurrency`` (or a deploy with a new ``rate``) applies to the
    jobs already queued."""

    def __init__(self) -> None:
        #: (queue, name, runs shipped code) -> the lane rule written for it ("" for none known)
        self._noted: dict[tuple[str, str, bool], str] = {}

    def unnoted(self, jobs: Iterable[Kinded]) -> bool:
        """Whether a kind among ``jobs`` is not written yet, or its rule changed: every dispatch
        asks, so it builds nothing and awaits nothing (bench/RESULTS.md, the regression guard
        of issue 36)."""
        noted = self._noted
        for job in jobs:
            code = job.code
            held = noted.get((job.queue, job.name, code is not None and "." in code))
            if held is None:
                return True
            carried = NO_RULE if job.lane is None else job.lane_rule
            if carried != held and kind_rule_of(job) not in (None, held):
                return True
        return False

    async def note(self, driver: QueueDriver, jobs: Iterable[Kinded]) -> None:
        """Write the kinds of ``jobs`` not written by this process yet, and their rules where
        they changed."""
        rules: dict[tuple[str, str, bool], str | None] = {}
        for job in jobs:
            kind = (job.queue, job.name, shipped(job.code))
            rule = kind_rule_of(job)
            if rule is not None or kind not in rules:
                rules[kind] = rule
        for kind, rule in sorted(rules.items(), key=lambda item: item[0]):
            held = self._noted.get(kind)
            if held is None and (key := kind_key(*kind)) is not None:
                await driver.kv_put_new(key, b"")
            if rule is not None and rule != held:
                await driver.set_lane_rule(kind[0], kind[1], rule)
            self._noted[kind] = rule if rule is not None else (held or "")

    async def follow(self, driver: QueueDriver, queue: str, name: str, rule: str) -> bool:
        """A kind this process dispatched is defined again (a cell run again) with lane rule
        ``rule``: store it if it differs from the one written, so that the kind's queued jobs
        follow it. Whether it was stored."""
        changed = False
        for kind, held in list(self._noted.items()):
            if kind[:2] == (queue, name) and held != rule:
                if not changed:
                    await driver.set_lane_rule(queue, name, rule)
                    changed = True
                self._noted[kind] = rule
        return changed


class WorkerKinds:
    """What one worker runs (its factories' names, and shipped code when it trusts it) and the
    filter its claims need now: ``None`` while it runs every kind of its queues."""

    def __init__(self, driver: QueueDriver, queues: Sequence[str], executor: JobExecutor) -> None:
        self.driver = driver
        self.queues = list(queues)
        self.executor = executor
        self.factories: JobFactoryRegistry = executor.serializer.factories
        self.kinds: dict[str, bool] = {}
        self._told: set[str] = set()  # the names it said it does not run (logged once each)
        self._filter: tuple[Runs, Runs | None] | None = None  # the last filter, and what it is of
        self._read_at = float("-inf")
        self._runs: tuple[int, Runs] | None = None

    def runs(self) -> Runs:
        """What this worker runs now (a notebook cell run again may register more)."""
        version = self.factories.version
        if self._runs is None or self._runs[0] != version:
            self._runs = (version, Runs(frozenset(self.factories.names()), self.executor.loader is not None))
        return self._runs[1]

    def stale(self) -> bool:
        """Whether the kinds are due to be read again (or a job this process lacks was met)."""
        read_at = self._read_at
        return time.monotonic() >= read_at + READ_EVERY_S or self.executor.kinds_learned_at >= read_at

    def current(self) -> Runs | None:
        """The filter from the kinds read last (see ``claim_filter``), made again only when
        they or what this worker runs changed: a memory queue's lone consumer asks every job."""
        runs = self.runs()
        if self._filter is None or self._filter[0] is not runs:
            self._filter = (runs, needed_filter(self.kinds, runs) if self.kinds else None)
        return self._filter[1]

    async def claim_filter(self) -> Runs | None:
        """The filter the next claim needs, reading the kinds again every READ_EVERY_S."""
        if self.stale():
            self._read_at = time.monotonic()
            kinds: dict[str, bool] = {}
            for queue in self.queues:
                found = await self.driver.kv_scan(f"{KINDS_KEY}{queue}/")
                for name, runs_shipped in parse_kinds(queue, found).items():
                    kinds[name] = kinds.get(name, True) and runs_shipped
            self.kinds = kinds
            self._filter = None
            self._tell_unrunnable()
        return self.current()

    def _tell_unrunnable(self) -> None:
        """Log, once a name, the kinds of its queues this worker leaves to others."""
        runs = self.runs()
        for name, runs_shipped in self.kinds.items():
            if name in self._told or name in runs.names or (runs_shipped and runs.shipped):
                continue
            self._told.add(name)
            logger.info("jobs named %r are left to workers that run them: %s", name, lacks(name))


def lacks(name: str) -> str:
    """What a worker that lacks the job kind ``name`` is missing, and the way to give it."""
    if name.startswith("__main__."):
        return ("it was defined in a notebook cell or a script (module __main__): the kernel's own "
                "workers run it, or ship its code (kn.Queue(url, ship_code=True) and "
                "`khadem-nb worker --trust-code`)")
    return ("no job factory is registered for it in this process (import its module: "
            "`khadem-nb worker --import MODULE`)")


async def note_kind(driver: QueueDriver, record: JobRecord) -> None:
    """Note the kind of a claimed job that a worker lacks (one dispatched by a process that
    notes none), so that claims read it from now on."""
    key = kind_key(record.queue, record.name, shipped(record.code))
    if key is not None:
        await driver.kv_put_new(key, b"")


def runs_reasons(records: Iterable[JobRecord], entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Why due jobs wait that no live worker runs: job id -> ``no live worker runs 'train'
    (workers run: preprocess, report)``. Said only where live workers say what they run."""
    told = [e for e in entries if e.get("state") in ("idle", "busy") and isinstance(e.get("runs"), list)]
    if not told:
        return {}
    names = sorted({str(n) for e in told for n in e["runs"]})
    trusting = any(e.get("trusts_code") is True for e in told)
    shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more"
                                              if len(names) > SHOWN_NAMES else "")
    runnable = set(names)
    reasons = {}
    for record in records:
        if record.status.value != "queued" or record.name in runnable or (trusting and shipped(record.code)):
            continue
        hint = "; defined in a notebook cell: ship its code or run the kernel's workers" \
            if record.name.startswith("__main__.") else ""
        reasons[record.id] = f"no live worker runs {record.name!r} (workers run: {shown or 'nothing'}){hint}"
    return reasons
