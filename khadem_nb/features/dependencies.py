"""Jobs that run after others: ``dispatch(job, after=[...])``, ``then`` and ``reduce``.

A job dispatched with parents is stored ``waiting``. Every driver keeps, beside it, the set of
its parents that have not ended, and changes that set in the same atomic step as each parent's
end (settle, cancel, lease loss): when the last parent ends the child becomes queued; a parent
that fails or is cancelled cancels the child at once unless it runs anyway
(``on_upstream_failure="run"``); a parent whose record is gone ends the child with that reason.
A child stored after some parents ended is judged against them in the step that stores it.

What a child is given of its parents when it runs is its ``feed``: ``"result"`` (``then``: its
one parent's result), ``"results"`` (``reduce``: one dict per parent, failed ones included) or
``"completed_results"`` (completed parents only). See docs/workflows.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..artifacts.store import load
from ..errors import ConfigError, JobError
from ..job import CANCELLED, COMPLETED, FAILED, TERMINAL_STATUSES, WAITING, JobRecord, JobStatus, cancel_error
from ..serializer import decode_value

if TYPE_CHECKING:
    from ..drivers.base import QueueDriver

UPSTREAM_POLICIES = ("cancel", "run")
FEEDS = ("result", "results", "completed_results")
#: the feeds that give one dict per parent (a reduce)
GROUP_FEEDS = ("results", "completed_results")
MAX_PARENTS = 100_000


def parent_ids(after: Any) -> list[str]:
    """The ids ``after=`` names: an id, a handle (anything with ``.id``), a group (``.ids``),
    or an iterable of those; in order, each once. ``ConfigError`` for anything else."""
    if isinstance(after, str) or hasattr(after, "id") or hasattr(after, "ids"):
        after = [after]
    if not isinstance(after, Iterable):
        raise ConfigError(f"after= takes job ids or handles, got {after!r}")
    found: dict[str, None] = {}
    for item in after:
        if isinstance(item, str) and item:
            found[item] = None
        elif isinstance(getattr(item, "ids", None), list):
            found.update(dict.fromkeys(item.ids))
        elif isinstance(getattr(item, "id", None), str):
            found[item.id] = None
        else:
            raise ConfigError(f"after= takes job ids, handles or groups, got {item!r}")
    if len(found) > MAX_PARENTS:
        raise ConfigError(f"after= names {len(found)} jobs; at most {MAX_PARENTS} parents per job")
    return list(found)


def check_policy(value: Any) -> str:
    if value not in UPSTREAM_POLICIES:
        raise ConfigError(f"on_upstream_failure must be one of {', '.join(UPSTREAM_POLICIES)}, got {value!r}")
    return str(value)


def ended_reason(parent_id: str, status: JobStatus | None) -> str:
    """Why a child ends because of its parent (``None``: the parent's record is gone)."""
    if status is None:
        return f"upstream job {parent_id} is gone"
    return f"upstream job {parent_id} {'failed' if status is FAILED else 'was cancelled'}"


def stops_child(child: JobRecord, status: JobStatus | None) -> bool:
    """Whether a parent ending in ``status`` cancels ``child`` at once."""
    return status is None or (status is not COMPLETED and child.on_upstream_failure != "run")


@dataclass(slots=True)
class Judgement:
    """What a child's parents make of it now: the parents it still waits for, or the parent
    that ends it (``stopper``, with its status; ``None`` status: its record is gone)."""

    left: list[str] = field(default_factory=list)
    stopper: str | None = None
    stopper_status: JobStatus | None = None

    @property
    def reason(self) -> str:
        return ended_reason(self.stopper or "", self.stopper_status)


def judge(child: JobRecord, statuses: Mapping[str, JobStatus | None]) -> Judgement:
    """Judge a child about to be stored against its parents' statuses (``None``: gone)."""
    judgement = Judgement()
    for parent in child.parents or ():
        status = statuses.get(parent)
        if status is None or status in TERMINAL_STATUSES:
            if stops_child(child, status):
                return Judgement([], parent, status)
        else:
            judgement.left.append(parent)
    return judgement


def stop_child(child: JobRecord, reason: str, now_ms: int) -> None:
    """End a waiting child because of a parent (see ``job.cancel_error``)."""
    child.status = CANCELLED
    child.finished_ms = now_ms
    child.error, child.traceback = cancel_error(reason, WAITING), None


def place_child(record: JobRecord, statuses: Mapping[str, JobStatus | None], now_ms: int) -> list[str]:
    """Judge a child about to be stored against its parents' statuses (read in the step that
    stores it; ``None``: gone) and set its status: cancelled by a parent that ends it, waiting,
    or left as dispatched (its parents have all ended). Returns the parents it waits for."""
    judgement = judge(record, statuses)
    if judgement.stopper is not None:
        stop_child(record, judgement.reason, now_ms)
    elif judgement.left:
        record.status = WAITING
    return judgement.left


class DependencyIndex:
    """The parents each waiting child still waits for, and the children of each parent: what
    the drivers that keep records in Python (memory, sync) change at each parent's end."""

    __slots__ = ("children", "left")

    def __init__(self) -> None:
        self.left: dict[str, set[str]] = {}
        self.children: dict[str, set[str]] = {}

    def add(self, child: str, parents: Sequence[str]) -> None:
        self.left[child] = set(parents)
        for parent in parents:
            self.children.setdefault(parent, set()).add(child)

    def ended(self, parent: str) -> list[tuple[str, bool]]:
        """The children of ``parent``, each with whether it waits for no other parent now."""
        found = []
        for child in self.children.pop(parent, ()):
            left = self.left.get(child)
            if left is None:
                continue
            left.discard(parent)
            found.append((child, not left))
        return found

    def drop(self, child: str) -> None:
        """Forget a child that no longer waits (it ended, or was released)."""
        for parent in self.left.pop(child, ()):
            siblings = self.children.get(parent)
            if siblings is not None:
                siblings.discard(child)
                if not siblings:
                    del self.children[parent]

    def clear(self) -> None:
        self.left.clear()
        self.children.clear()


# -- what a child is given -------------------------------------------------------------------
def outcome(record: JobRecord, params: Mapping[str, Any] | None = None, *,
            loaded: bool = True) -> dict[str, Any]:
    """One parent as a reduce sees it: its parameters (a job function's arguments, or a job's
    JSON), result (completed ones; its artifacts loaded, or left as references where
    ``loaded`` is false), status, failure kind, duration, attempts, error, code."""
    if params is None:
        params = _params_of(record.payload)
    completed = record.status is COMPLETED
    result = decode_value(record.result) if completed else None
    return {"id": record.id, "job": record.name, "key": record.key, "params": dict(params),
            "result": load(result) if loaded else result,
            "status": record.status.value,
            "failure": record.failure if record.status is FAILED else None,
            "duration_ms": record.duration_ms, "attempt": record.attempt,
            "error": record.error if record.status in (FAILED, CANCELLED) else None,
            "code": record.fingerprint}


def _params_of(payload: Any) -> dict[str, Any]:
    data = decode_value(payload)
    if isinstance(data, dict) and isinstance(data.get("kwargs"), dict):
        return dict(data["kwargs"])  # a job function's call
    return dict(data) if isinstance(data, dict) else {"payload": data}


async def upstream_of(driver: QueueDriver, record: JobRecord) -> Any:
    """What ``record`` is given of its parents (its ``feed``): read when it starts."""
    parents = record.parents or []
    found = await driver.get_many(parents)
    missing = [job_id for job_id, r in zip(parents, found, strict=True) if r is None]
    if missing:
        raise JobError(f"{ended_reason(missing[0], None)}: {len(missing)} parent record(s) cannot be read "
                       "(finished and dropped by retention, or lost); a job given its parents' results "
                       "reads them when it starts, so keep queue.retention above the size of the group")
    records = [r for r in found if r is not None]
    if record.feed == "result":
        parent = records[0]
        return load(decode_value(parent.result)) if parent.status is COMPLETED else None
    if record.feed == "completed_results":
        records = [r for r in records if r.status is COMPLETED]
    return [outcome(r) for r in records]


async def end_orphans(driver: QueueDriver, queues: Iterable[str]) -> int:
    """Cancel the waiting jobs of ``queues`` one of whose parents' records is gone (lost with
    its storage), with that reason; their own children follow. Returns how many it ended. Every
    driver releases and ends children as their parents end; this finds what nothing else can:
    a parent that vanished while its child waited."""
    waiting = [r for q in set(queues) for r in await driver.jobs(WAITING, q)]
    parents = sorted({p for r in waiting for p in r.parents or ()})
    if not parents:
        return 0
    statuses = dict(zip(parents, await driver.statuses(parents), strict=True))
    ended = 0
    for record in waiting:
        gone = next((p for p in record.parents or () if statuses[p] is None), None)
        if gone is not None:
            ended += len(await driver.cancel([record.id], ended_reason(gone, None)))
    return ended


def check_feed(feed: Any, parents: Sequence[str]) -> str | None:
    if feed is None:
        return None
    if feed not in FEEDS:
        raise ConfigError(f"feed must be one of {', '.join(FEEDS)}, got {feed!r}")
    if not parents:
        raise ConfigError(f"feed={feed!r} needs parents (after=...)")
    if feed == "result" and len(parents) != 1:
        raise ConfigError(f"feed='result' passes one parent's result; after= names {len(parents)} jobs")
    return str(feed)

