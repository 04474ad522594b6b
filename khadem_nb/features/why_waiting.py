"""Why a due job is not running yet: what its lane's rule holds it back by (``flow``), read
from what the lane holds now and what live workers offer (``resources``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .flow import UNIQUE_LANE, LaneRule, LaneUse, rule_for, shown_lane
from .resources import Offer

#: how the reasons that pass by themselves begin: a lane's slot is freed by its holder's settle
#: or lease, a rate window moves on
PASSING = ("limit ", "rate ", "unique: ")


def frees_up(reason: str) -> bool:
    """Whether what ``reason`` says holds a job back ends by itself (see ``PASSING``)."""
    return reason.startswith(PASSING)


def wait_reason(lane: str, rule: LaneRule, use: LaneUse, offers: Iterable[Offer]) -> str | None:
    """Why a due job of ``lane`` is not running, in a few words (``None``: nothing in its rule
    holds it back, it waits for a worker)."""
    if lane.startswith(UNIQUE_LANE) and rule.concurrency is not None and use.held >= rule.concurrency:
        return "unique: same job running"
    if rule.concurrency is not None and use.held >= rule.concurrency:
        return f"limit {shown_lane(lane)} {use.held}/{rule.concurrency}"
    if rule.rate is not None and use.recent >= rule.rate.n:
        return f"rate {rule.rate}"
    if rule.needs:
        return _resource_reason(dict(rule.needs), list(offers))
    return None


def _resource_reason(needs: dict[str, int], offers: list[Offer]) -> str | None:
    asked = ",".join(f"{name}={units}" for name, units in needs.items())
    if not any(all(o.offered.get(n, 0) >= u for n, u in needs.items()) for o in offers):
        most = {n: max((o.offered.get(n, 0) for o in offers), default=0) for n in needs}
        offered = ",".join(f"{n}={u}" for n, u in most.items())
        return f"needs {asked}; no live worker offers that many (most: {offered})"
    if not any(all(o.free.get(n, 0) >= u for n, u in needs.items()) for o in offers):
        return f"needs {asked}, none free"
    return None


async def wait_reasons(driver: Any, records: Iterable[Any]) -> dict[str, str]:
    """Why each due job with limits among ``records`` is not running yet: job id -> a few
    words (see ``wait_reason``); jobs that only wait for a worker are left out."""
    waiting = [r for r in records if r.lane is not None and r.status.value == "queued"]
    lanes_of: dict[str, dict[str, LaneRule]] = {}
    stored: dict[str, dict[str, str]] = {}  # each queue's kind rules, as its claims read them
    for record in waiting:
        if record.queue not in stored:
            stored[record.queue] = await driver.lane_rules(record.queue)
        lanes_of.setdefault(record.queue, {})[record.lane] = rule_for(record.lane, record.lane_rule,
                                                                     stored[record.queue])
    needs_units = any(rule.needs for lanes in lanes_of.values() for rule in lanes.values())
    offers = await driver.offers() if needs_units else []
    reasons: dict[str, str] = {}
    for queue, lanes in lanes_of.items():
        use = await driver.lane_use(queue, lanes)
        for record in (r for r in waiting if r.queue == queue):
            reason = wait_reason(record.lane, lanes[record.lane], use.get(record.lane, LaneUse()), offers)
            if reason is not None:
                reasons[record.id] = reason
    return reasons
