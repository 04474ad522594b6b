"""A worker's resource units: what it offers (``--resources gpu=4``), which units each of its
jobs holds, and the offers workers tell their queue (what says a job asks for too much).

Units of a resource are numbered from 0; a job asking ``{"gpu": 1}`` gets the lowest free
number, sees it in ``context().resources == {"gpu": [2]}``, and an isolated job runs with
``CUDA_VISIBLE_DEVICES`` set to its ``gpu`` units. The claim itself never takes more than is
free: the worker passes ``free()`` to ``reserve``, and takes the units of what it claimed at
once, before the next claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import KhademError
from .flow import rule_of


@dataclass(frozen=True, slots=True)
class Offer:
    """A live worker's resource units: all it offers, and those free at ``seen_ms``."""

    worker: str
    offered: dict[str, int]
    free: dict[str, int]
    seen_ms: int


#: seconds a worker's offer counts as live after it last told it (workers tell at least every
#: OFFER_EVERY_S while they run)
OFFER_TTL_S = 30.0
OFFER_EVERY_S = 5.0



#: the resource whose units an isolated job sees as ``CUDA_VISIBLE_DEVICES``
GPU = "gpu"
Units = dict[str, list[int]]


class ResourcePool:
    """The units one worker offers, and those its jobs hold."""

    def __init__(self, offered: Mapping[str, int]) -> None:
        self.offered = dict(offered)
        self._free: dict[str, list[int]] = {name: list(range(n)) for name, n in offered.items()}
        self._held: dict[str, Units] = {}  # job id -> its units

    def free(self) -> dict[str, int]:
        """Free units by resource name."""
        return {name: len(units) for name, units in self._free.items()}

    def take(self, job_id: str, lane_rule: str | None) -> Units:
        """Give job ``job_id`` the units its lane rule asks for (none without a rule)."""
        needs = rule_of(lane_rule).needs if lane_rule else ()
        units: Units = {}
        for name, count in needs:
            free = self._free.get(name, [])
            if len(free) < count:  # the claim checked: this is a bug, never a job's fault
                raise KhademError(f"job {job_id} needs {name}={count} but only {len(free)} are free here")
            units[name], self._free[name] = free[:count], free[count:]
        if units:
            self._held[job_id] = units
        return units

    def give_back(self, job_id: str) -> None:
        """The job is done with its units (finished, released, or dropped)."""
        for name, units in self._held.pop(job_id, {}).items():
            self._free[name] = sorted(self._free[name] + units)

    def units_of(self, job_id: str) -> Units:
        return self._held.get(job_id, {})


def cuda_devices(units: Mapping[str, list[int]]) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for a job holding ``units`` (``None``: it holds no GPU)."""
    gpus = units.get(GPU)
    return None if gpus is None else ",".join(str(u) for u in gpus)
