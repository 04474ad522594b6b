"""Pruning: stop the points of a group that are clearly losing, from what every point reported.

A rule looks at the reports (``telemetry``) of every point of a group, running or ended,
wherever it runs, and names the running points to stop, each with why. Whoever watches the
group (the notebook's sweep) cancels them through the usual cancel, so a cooperative job sees
``kn.cancelled()`` (its next ``kn.report`` raises), an async one is cancelled, an isolated one
killed; the point ends ``cancelled`` with ``pruned: <why>`` as its error.

- ``MedianPruner`` (Optuna's rule): at step ``s`` after ``warmup_steps``, a point whose best
  value so far is strictly worse than the median of the values the other points reported at
  ``s`` is pruned, once at least ``min_points`` of them have. A point is judged at its latest
  step that has that many reports, so one ahead of the others is judged too.
- ``SuccessiveHalving`` (asynchronous successive halving): rungs at ``min_steps *
  reduction_factor**k``; a point that reached a rung goes on only while its value there is
  among the best ``1/reduction_factor`` of the values every point reported there.
- ``OptunaPruner(pruner, metric, mode)``: one of Optuna's pruners (the ``tune`` extra) judges
  the points as trials of a study of the group's own: each point's new steps are told to it
  (``trial.report``), an ended point is told as a complete, pruned or failed trial, and a
  running point ``trial.should_prune()`` names is stopped.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..job import ACTIVE, CANCELLED, COMPLETED, TERMINAL_STATUSES, JobRecord
from .telemetry import METRIC_NAME, REPORTS, WATCHED_FLUSH_S, points

PRUNED = "pruned: "  # how the error of a pruned point starts
MODES = ("min", "max")

Series = dict[int, float]  # one point's values of the rule's metric, by step
JUDGED_STEPS = 16  # MedianPruner looks back at most this many of a point's steps for evidence

#: how often a watcher reads a group's live points: WATCHED_FLUSH_S (as often as their reports
#: arrive), slower for big groups so a look reads at most about LOOK_RATE records a second, and
#: at least every LOOK_SLOWEST_S
LOOK_RATE, LOOK_SLOWEST_S = 1_000, 2.0


def _check(metric: Any, mode: Any, counts: Mapping[str, Any]) -> None:
    if not isinstance(metric, str) or not METRIC_NAME.match(metric):
        raise ConfigError(f"a pruner's metric is a metric name (an identifier, like 'val_loss'), "
                          f"got {metric!r}")
    if mode not in MODES:
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
    for name, (value, lowest) in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ConfigError(f"{name} must be a whole number >= {lowest}, got {value!r}")


def series_of(record: JobRecord, metric: str) -> Series:
    """``record``'s reported values of ``metric`` by step (NaN left out: it is no evidence)."""
    return {step: value for name, step, value, _ in points(record.meta)
            if name == metric and not math.isnan(value)}


def _best(values: Sequence[float], mode: str) -> float:
    return min(values) if mode == "min" else max(values)


def _worse(value: float, than: float, mode: str) -> bool:
    return value > than if mode == "min" else value < than


@dataclass(frozen=True)
class MedianPruner:
    """Prune a point worse than the median of the others at its step (see the module)."""

    metric: str
    mode: str = "min"
    warmup_steps: int = 0
    min_points: int = 4

    def __post_init__(self) -> None:
        _check(self.metric, self.mode, {"warmup_steps": (self.warmup_steps, 0),
                                        "min_points": (self.min_points, 1)})

    def verdict(self, series: Series, others: Sequence[Series]) -> str | None:
        """Why a running point with ``series`` is pruned, given the others' series; ``None``
        to let it run. It is judged at its last step that at least ``min_points`` others
        reported, with its best value up to that step: a point ahead of the others (started
        first, or faster) is judged where their reports are, not let run for want of them."""
        if not series:
            return None
        reached = sorted((max(other) for other in others if other), reverse=True)
        if len(reached) < self.min_points:
            return None
        top = min(max(series), reached[self.min_points - 1])  # no later step has enough reports
        for step in sorted((s for s in series if s <= top), reverse=True)[:JUDGED_STEPS]:
            if step < self.warmup_steps:
                return None
            at_step = [other[step] for other in others if step in other]
            if len(at_step) < self.min_points:
                continue  # a thinned or skipped step: the one before may have them
            median = statistics.median(at_step)
            best = _best([v for s, v in series.items() if s <= step], self.mode)
            if not _worse(best, median, self.mode):
                return None
            return (f"{self.metric} {best:.6g} at step {step}, worse than the median {median:.6g} of "
                    f"{len(at_step)} other points (MedianPruner)")
        return None


@dataclass(frozen=True)
class SuccessiveHalving:
    """Asynchronous successive halving (see the module)."""

    metric: str
    mode: str = "min"
    min_steps: int = 1
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        _check(self.metric, self.mode, {"min_steps": (self.min_steps, 1),
                                        "reduction_factor": (self.reduction_factor, 2)})

    def rungs(self, up_to: int) -> list[int]:
        """The rung steps at or below ``up_to``."""
        found, step = [], self.min_steps
        while step <= up_to:
            found.append(step)
            step *= self.reduction_factor
        return found

    def verdict(self, series: Series, others: Sequence[Series]) -> str | None:
        """Why a running point with ``series`` is pruned at its last rung (its value not in the
        best ``1 / reduction_factor`` of the points that reached it); ``None`` to let it run."""
        if not series:
            return None
        for rung in reversed(self.rungs(max(series))):
            if rung not in series:
                continue
            value = series[rung]
            there = sorted([other[rung] for other in others if rung in other] + [value],
                           reverse=self.mode == "max")
            kept = max(1, len(there) // self.reduction_factor)
            if _worse(value, there[kept - 1], self.mode):
                return (f"{self.metric} {value:.6g} at step {rung}, not among the best {kept} of "
                        f"{len(there)} points at that rung (SuccessiveHalving)")
            return None
        return None


def import_optuna() -> Any:
    """Optuna, or an ``ImportError`` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError('this drives Optuna, which is not installed: pip install "khadem_nb[tune]"') \
            from None
    return optuna


def is_optuna_pruner(prune: Any) -> bool:
    """Whether ``prune`` is one of Optuna's pruners (without importing Optuna when it is not
    loaded: then it cannot be one)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(prune, optuna.pruners.BasePruner)


@dataclass(frozen=True)
class OptunaPruner:
    """One of Optuna's pruners (``optuna.pruners.HyperbandPruner()``...) over the reports of
    ``metric``, better when lower (``mode="min"``) or higher: see the module."""

    pruner: Any
    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        import_optuna()
        if not is_optuna_pruner(self.pruner):
            raise ConfigError(f"kn.OptunaPruner takes one of Optuna's pruners, like "
                              f"optuna.pruners.HyperbandPruner(), got {self.pruner!r}")
        _check(self.metric, self.mode, {})

    @property
    def name(self) -> str:
        return type(self.pruner).__name__


Pruner = MedianPruner | SuccessiveHalving | OptunaPruner


def check_pruner(prune: Any) -> Pruner | None:
    if prune is None or isinstance(prune, MedianPruner | SuccessiveHalving | OptunaPruner):
        return prune
    if is_optuna_pruner(prune):
        raise ConfigError(f"Optuna's {type(prune).__name__} does not know which metric to read: pass "
                          f"kn.OptunaPruner(pruner, metric='val_loss', mode='min')")
    raise ConfigError(f"prune= takes kn.MedianPruner(...), kn.SuccessiveHalving(...) or "
                      f"kn.OptunaPruner(optuna_pruner, metric=...), got {prune!r}")


def optuna_verdict(trial: Any, series: Series, told: int, metric: str, rule: str,
                   running: bool) -> tuple[int, str | None]:
    """Tell Optuna a trial's steps of ``series`` after step ``told``: the last step told now,
    and, for a ``running`` one, the error that prunes it when its pruner says so (``None``:
    it goes on)."""
    last = told
    for step in sorted(s for s in series if s > told):
        trial.report(series[step], step)
        last = step
    if running and last > told and trial.should_prune():
        return last, f"{PRUNED}{metric} {series[last]:.6g} at step {last} (Optuna's {rule})"
    return last, None


def watch_interval(live: int) -> float:
    """Seconds between two looks at a group with ``live`` points not yet ended."""
    return min(LOOK_SLOWEST_S, max(WATCHED_FLUSH_S, live / LOOK_RATE))


def metrics_in(record: JobRecord) -> list[str]:
    """The names of the metrics ``record`` reported."""
    reports = record.meta.get(REPORTS)
    return list(reports) if isinstance(reports, dict) else []


class MetricsSeen:
    """The metrics a group's points reported, to say once when none of them is the pruner's
    (then it prunes nothing)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.names: set[str] = set()
        self.said = False

    def note(self, record: JobRecord) -> None:
        self.names.update(metrics_in(record))

    def reported(self) -> bool | None:
        """Whether any point reported the pruner's metric: ``None`` while no point reported
        anything, else whether one reported it."""
        return None if not self.names else self.metric in self.names

    def say_once(self, log: logging.Logger, points: str) -> None:
        """Log, the first time it is so, that the ``points`` report other metrics only."""
        if not self.said and self.reported() is False:
            self.said = True
            log.warning("pruning: no %s reports %r (they report %s); nothing is pruned", points, self.metric,
                        ", ".join(sorted(self.names)))


def watch_of(pruner: Pruner) -> GroupWatch:
    """The watch that prunes a group by ``pruner``."""
    return OptunaWatch(pruner) if isinstance(pruner, OptunaPruner) else RuleWatch(pruner)


class GroupWatch(ABC):
    """One group's pruning across looks: each look reads the records of the points that had
    not ended (``live``); an ended point's series is read once and kept, since it no longer
    changes."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.ended: dict[str, Series] = {}  # point id -> its series, once it ended
        self.seen = MetricsSeen(metric)  # every metric a point of the group reported

    def live(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` not known to have ended."""
        return [job_id for job_id in ids if job_id not in self.ended]

    def _series(self, record: JobRecord) -> Series:
        """``record``'s series of the pruner's metric, kept once it ended; its metrics noted."""
        found = series_of(record, self.metric)
        if record.status in TERMINAL_STATUSES:
            self.ended[record.id] = found
        self.seen.note(record)
        return found

    @abstractmethod
    def look(self, records: Sequence[JobRecord]) -> dict[str, str]:
        """The running points among ``records`` (the live ones, freshly read) to stop, by id,
        each with its error (``pruned: ...``), against every point seen so far."""


class RuleWatch(GroupWatch):
    """A group pruned by one of our rules (``MedianPruner``, ``SuccessiveHalving``)."""

    def __init__(self, rule: MedianPruner | SuccessiveHalving) -> None:
        super().__init__(rule.metric)
        self.rule = rule

    def look(self, records: Sequence[JobRecord]) -> dict[str, str]:
        series = dict(self.ended)
        for record in records:
            series[record.id] = self._series(record)
        stops = {}
        for record in records:
            if record.status is not ACTIVE:
                continue
            others = [s for job_id, s in series.items() if job_id != record.id]
            why = self.rule.verdict(series[record.id], others)
            if why is not None:
                stops[record.id] = PRUNED + why
        return stops


class OptunaWatch(GroupWatch):
    """A group pruned by one of Optuna's pruners: each point that started is a trial of a
    study of the group's own (its parameters are the point's, so the study's sampler never
    samples), told its new steps at every look and told how it ended."""

    def __init__(self, pruner: OptunaPruner) -> None:
        super().__init__(pruner.metric)
        optuna = import_optuna()
        self.rule = pruner.name
        self.study = optuna.create_study(direction="minimize" if pruner.mode == "min" else "maximize",
                                         pruner=pruner.pruner)
        self.trials: dict[str, Any] = {}  # point id -> its trial
        self.told: dict[str, int] = {}  # point id -> the last step told

    def look(self, records: Sequence[JobRecord]) -> dict[str, str]:
        state = import_optuna().trial.TrialState
        stops = {}
        for record in records:
            if record.started_ms is None and record.status not in TERMINAL_STATUSES:
                continue  # not started: no trial yet
            series = self._series(record)
            trial = self.trials.get(record.id)
            if trial is None:
                trial = self.trials[record.id] = self.study.ask()
            told, why = optuna_verdict(trial, series, self.told.get(record.id, -1), self.metric, self.rule,
                                       running=record.status is ACTIVE)
            self.told[record.id] = told
            if why is not None:
                stops[record.id] = why
            elif record.status is COMPLETED and series:
                self.study.tell(trial, series[max(series)])
            elif record.status in TERMINAL_STATUSES:
                self.study.tell(trial, state=state.PRUNED if record.status is CANCELLED else state.FAIL)
        return stops
