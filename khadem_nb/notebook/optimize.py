"""``fn.optimize(space, metric=, ...)``: Optuna's ask-and-tell driven by the queue.

The kernel asks Optuna for a trial's parameters, dispatches the job function with them as an
ordinary job (so it runs on any worker: in this kernel, in ``khadem-nb worker`` processes, on
trusting workers with shipped code), keeps ``parallel`` of them in flight, and tells Optuna
each outcome as its job ends: the objective is the job's result when it is a number,
``result[metric]`` when it is a dict holding it, else the last value of ``metric`` the job
reported (``kn.report``). A job that failed is told as a failed trial, a pruned or cancelled
one as pruned. With ``name`` on a durable queue the study is kept in the queue's keyed store
(``studies/<name>``: its space, metric, mode, and each trial's number, job and parameters):
the same cell run after a kernel restart tells Optuna the trials that ended, adopts those
still running, and goes on to ``n_trials`` without running any again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import numbers
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, KhademError
from ..features.pruning import (
    MedianPruner,
    MetricsSeen,
    OptunaPruner,
    RuleWatch,
    SuccessiveHalving,
    check_pruner,
    import_optuna,
    is_optuna_pruner,
    optuna_verdict,
    series_of,
    watch_interval,
)
from ..features.space import check_space, distributions, space_text
from ..features.telemetry import METRIC_NAME, WATCHED, last_values
from ..job import ACTIVE, CANCELLED, COMPLETED, TERMINAL_STATUSES, JobRecord
from ..runtime.notifying import Message, apprise_of, send_once
from ..runtime.waiting import SettleNotices, watch, woken_within
from ..serializer import decode_value

if TYPE_CHECKING:
    import pandas as pd

    from ..manager import Dispatch
    from .functions import JobFunction

logger = logging.getLogger(__name__)
LOOK_EVERY_S = 0.5  # the trials in flight are read at least this often (a settle wakes the read at once)
STUDY_KEY = "studies/"  # the keyed store's prefix of named studies
STUDIES_KEPT = 20  # the latest studies a kernel's queue keeps for its panel


def number_in(result: Any, metric: str) -> float | None:
    """A trial's result as its objective: the result when a number, ``result[metric]`` when a
    dict holds a number there; else ``None``."""
    if isinstance(result, Mapping):
        result = result.get(metric)
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        return float(result)
    return None


def objective_of(record: JobRecord | None, metric: str) -> float | None:
    """A completed trial's value: its result's number (``number_in``), else the last reported
    value of ``metric``; ``None`` when it has none (or did not complete)."""
    if record is None or record.status is not COMPLETED:
        return None
    value = number_in(decode_value(record.result), metric)
    return value if value is not None else last_values(record.meta).get(metric)


class Study:
    """A running optimization: ``await study``, ``study.wait()``, ``study.best``,
    ``study.results()``, ``study.cancel()``."""

    def __init__(self, fn: JobFunction, space: Any, *, metric: str, mode: str, n_trials: int,
                 parallel: int, prune: Any, sampler: Any, name: str | None) -> None:
        optuna = import_optuna()
        self.space = check_space(space)
        if not isinstance(metric, str) or not METRIC_NAME.match(metric):
            raise ConfigError(f"metric is a metric name (an identifier, like 'val_loss'), got {metric!r}")
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        for value, what in ((n_trials, "n_trials"), (parallel, "parallel")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be a whole number >= 1, got {value!r}")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
            raise ConfigError(f"a study's name is text of 1 to 200 characters, got {name!r}")
        prune = check_pruner(OptunaPruner(prune, metric, mode) if is_optuna_pruner(prune) else prune)
        #: one of Optuna's pruners, told each running trial's reports of ``prune_metric``
        #: (``_optuna_prune``); it judges them in the study's direction
        self.optuna_pruner = prune.pruner if isinstance(prune, OptunaPruner) else None
        self.prune_metric = metric if prune is None else prune.metric
        if isinstance(prune, OptunaPruner) and prune.mode != mode:
            raise ConfigError(f"Optuna's {prune.name} judges the reports in the study's direction ({mode}), "
                              f"but kn.OptunaPruner was given mode={prune.mode!r}")
        #: the trials' reports as our pruner reads them: each ended trial's read once
        self._watch = RuleWatch(prune) if isinstance(prune, MedianPruner | SuccessiveHalving) else None
        self._seen = MetricsSeen(self.prune_metric)  # the metrics the trials reported
        self.fn, self.metric, self.mode, self.n_trials, self.parallel = fn, metric, mode, n_trials, parallel
        self.pruner, self.name = prune, name
        self.queue = fn.queue
        self.study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                         sampler=sampler, study_name=name, pruner=self.optuna_pruner)
        self._steps_told: dict[int, int] = {}  # trial number -> the last step told to Optuna
        self._distributions = distributions(self.space)
        self._trials: dict[int, tuple[str, dict[str, Any]]] = {}  # number -> (job id, parameters)
        self._told: set[int] = set()
        self._adopted: dict[str, Any] = {}  # job id -> trial, of a stored study's running trials
        self._notices = SettleNotices(())  # settles of the trials in flight, as they are heard
        self._unwatch: dict[str, Callable[[], None]] = {}  # job id -> its settle's unwatch
        self._ended = asyncio.Event()
        self._failure: BaseException | None = None
        self._task = self.queue.run_soon(self._drive())
        self.queue.studies.append(self)
        del self.queue.studies[:-STUDIES_KEPT]

    def notify(self, urls: str | Sequence[str]) -> Study:
        """Send a message through apprise (any URL apprise knows, like ``"ntfy://topic"``)
        when the study ends: its trials and its best value and parameters. Sent once, by
        whichever process sees the end first (``runtime.notifying``)."""
        sender = apprise_of(urls)
        self.queue.watch_study(self._told_end(sender))
        return self

    async def _told_end(self, sender: Any) -> None:
        await self._ended.wait()
        best = self.study.best_trial if any(t.value is not None for t in self.study.trials) else None
        label = self.name or self.fn.name.rsplit(".", 1)[-1]
        body = f"{len(self.study.trials)} trials"
        if best is not None:
            shown = ", ".join(f"{k}={v!r}" for k, v in best.params.items())
            body += f"\nbest {self.metric} {best.value:.6g} at {shown}"
        told = Message(f"study {label} finished", body, "success" if best is not None else "warning")
        await send_once(self.queue.manager.driver, sender, f"study/{self.study.study_name}/done", told)

    # -- the driver, on the queue's loop ------------------------------------------------------
    async def _drive(self) -> None:
        try:
            await self.queue.opened()
            await self._resume()
            manager = self.queue.manager
            # local settles reach the notices from here on; each trial's id is watched on the
            # driver (other processes' settles) before its job is stored (``_follow``)
            async with watch(manager.driver, manager.executor.listeners, self._notices):
                try:
                    await self._run_trials()
                finally:
                    for unwatch in self._unwatch.values():
                        unwatch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a storage fault, a stored study of another space: wait() raises it
            self._failure = exc
            logger.warning("the study %s stopped: %s", self.name or "(unnamed)", exc)
        finally:
            self._ended.set()

    async def _run_trials(self) -> None:
        """Keep ``parallel`` trials in flight until ``n_trials`` have ended. A settle notice
        that carries a completed trial's number tells Optuna without a read; the trials in
        flight are read when a notice does not say enough, when a wait is not woken (a
        driver that does not hear other processes' workers), and at every look while a pruner
        reads their reports."""
        in_flight: dict[str, Any] = {}  # job id -> its trial
        for job_id, trial in self._adopted.items():
            await self._follow(job_id, trial, in_flight)
        read_all = bool(in_flight)  # adopted trials are read once, whatever is heard
        while len(self._told) < self.n_trials:
            while len(in_flight) < self.parallel and len(self._trials) < self.n_trials:
                trial = self.study.ask(self._distributions)
                prepared = self._prepared(trial.params)
                await self._follow(prepared.record.id, trial, in_flight)
                self._trials[trial.number] = (await self.queue.manager.store(prepared), dict(trial.params))
                await self._save()
            self._notices.event.clear()  # notices from here on wake the wait below
            told, read_all = await self._look(in_flight, read_all), False
            if not told:
                every = LOOK_EVERY_S if self.pruner is None else watch_interval(len(in_flight))
                woken = await woken_within(self._notices.event, every)
                read_all = not woken or self._notices.unclear
                self._notices.unclear = False

    async def _follow(self, job_id: str, trial: Any, in_flight: dict[str, Any]) -> None:
        """Put a trial's job in flight, its settle watched (before it is stored: none is missed)."""
        in_flight[job_id] = trial
        self._notices.wanted.add(job_id)
        self._unwatch[job_id] = await self.queue.manager.driver.watch([job_id], self._notices)

    async def _look(self, in_flight: dict[str, Any], read_all: bool) -> int:
        """Tell Optuna the trials that ended (pruning the losers first, with a pruner), and
        return how many."""
        heard = [job_id for job_id in self._notices.take_fresh() if job_id in in_flight]
        told = 0
        for job_id in heard if self.pruner is None else ():  # a notice carried its number: no read
            if job_id in self._notices.results:
                value = number_in(decode_value(self._notices.results[job_id]), self.metric)
                if value is not None:
                    self._tell(job_id, in_flight.pop(job_id), value, cancelled=False)
                    told += 1
        # with a pruner every look reads every trial in flight: an ended trial's last reports
        # are evidence too
        ids = list(in_flight) if read_all or self.pruner is not None else \
            [job_id for job_id in heard if job_id in in_flight]
        if not ids:
            return told
        records = await self.queue.manager.driver.get_many(ids)
        await self._prune(in_flight, records)
        for job_id, record in zip(ids, records, strict=True):
            if record is None or record.status in TERMINAL_STATUSES:
                cancelled = record is not None and record.status is CANCELLED
                self._tell(job_id, in_flight.pop(job_id), objective_of(record, self.metric), cancelled)
                told += 1
        return told

    def _prepared(self, params: dict[str, Any]) -> Dispatch:
        """One trial's job, built for ``store``; a pruner reads its reports, so it stores them
        more often (``telemetry.WATCHED``)."""
        prepared = self.queue.prepare_call(self.fn, params)
        if self.pruner is not None:
            prepared.record.meta[WATCHED] = True
        return prepared

    async def _prune(self, in_flight: dict[str, Any], records: list[JobRecord | None]) -> None:
        """Stop the running trials a pruner names: ours over every trial's reports
        (``RuleWatch``), or Optuna's (``_optuna_prune``). A pruner's metric that no trial
        reports, while they report others, is said once."""
        if self.pruner is None:
            return
        for record in records:
            if record is not None:
                self._seen.note(record)
        self._seen.say_once(logger, "trial")
        if self._watch is not None:
            for job_id, why in self._watch.look([r for r in records if r is not None]).items():
                await self.queue.manager.driver.cancel([job_id], why)
        elif self.optuna_pruner is not None:
            await self._optuna_prune(in_flight, records)

    async def _optuna_prune(self, in_flight: dict[str, Any], records: list[JobRecord | None]) -> None:
        """Tell Optuna the steps each trial reported since the last look (an ended one's too,
        before it is told how it ended), and stop the running ones its pruner prunes
        (``trial.should_prune()``)."""
        rule = type(self.optuna_pruner).__name__
        for record in records:
            if record is None or record.id not in in_flight:
                continue
            trial = in_flight[record.id]
            series = series_of(record, self.prune_metric)
            told, why = optuna_verdict(trial, series, self._steps_told.get(trial.number, -1),
                                       self.prune_metric, rule, running=record.status is ACTIVE)
            self._steps_told[trial.number] = told
            if why is not None:
                await self.queue.manager.driver.cancel([record.id], why)

    def _tell(self, job_id: str, trial: Any, value: float | None, cancelled: bool) -> None:
        """Tell Optuna how a trial's job ended: its objective, else pruned (a cancelled job:
        pruned, or cancelled by hand), else failed (a record gone to retention too)."""
        state = import_optuna().trial.TrialState
        if value is not None:
            self.study.tell(trial, value)
        elif cancelled:
            self.study.tell(trial, state=state.PRUNED)
        else:
            self.study.tell(trial, state=state.FAIL)
        self._told.add(trial.number)
        self._notices.wanted.discard(job_id)
        self._notices.results.pop(job_id, None)
        unwatch = self._unwatch.pop(job_id, None)
        if unwatch is not None:
            unwatch()

    # -- kept by name ------------------------------------------------------------------------
    async def _resume(self) -> None:
        """Tell Optuna the trials a study of this name ended before; adopt those still running."""
        if self.name is None:
            return
        stored = await self.queue.manager.driver.kv_get(f"{STUDY_KEY}{self.name}")
        if stored is None:
            return
        kept = json.loads(stored)
        given = space_text(self.space)
        if (kept["space"], kept["metric"], kept["mode"]) != (given, self.metric, self.mode):
            raise ConfigError(f"the study {self.name!r} was made with the space {kept['space']} "
                              f"({kept['mode']} {kept['metric']}); this call gives {given} ({self.mode} "
                              f"{self.metric}): use another name for another search")
        optuna = import_optuna()
        records = await self.queue.manager.driver.get_many([job for _, job, _ in kept["trials"]])
        if self._watch is not None:  # the trials that ended before are evidence for pruning
            self._watch.look([r for r in records if r is not None and r.status in TERMINAL_STATUSES])
        for (_, job_id, params), record in zip(kept["trials"], records, strict=True):
            if record is not None and record.status not in TERMINAL_STATUSES:  # still running: adopted
                self.study.enqueue_trial(params)  # the next ask gives a trial of these parameters
                trial = self.study.ask(self._distributions)
                self._adopted[job_id] = trial
                self._trials[trial.number] = (job_id, params)
                continue
            value = objective_of(record, self.metric)
            frozen = optuna.trial.create_trial(
                params=params, distributions=self._distributions, value=value,
                state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL)
            self.study.add_trial(frozen)
            number = len(self.study.trials) - 1
            self._trials[number] = (job_id, params)
            self._told.add(number)

    async def _save(self) -> None:
        if self.name is None:
            return
        kept = {"space": space_text(self.space), "metric": self.metric, "mode": self.mode,
                "trials": [[number, job, params] for number, (job, params) in sorted(self._trials.items())]}
        await self.queue.manager.driver.kv_put(f"{STUDY_KEY}{self.name}", json.dumps(kept).encode())

    # -- what the notebook reads ------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Study:
        """Block until ``n_trials`` trials have ended (or the study stopped)."""
        self.queue.run(asyncio.wait_for(self._ended.wait(), timeout))
        self._raise()
        return self

    async def _await(self) -> Study:
        await self.queue.run_async(self._ended.wait())
        self._raise()
        return self

    def __await__(self) -> Generator[Any, None, Study]:
        return self._await().__await__()

    def _raise(self) -> None:
        if isinstance(self._failure, Exception):
            raise self._failure

    @property
    def best(self) -> dict[str, Any]:
        """The best trial so far: its parameters and ``value``; ``KhademError`` before one ended."""
        try:
            trial = self.study.best_trial
        except ValueError:
            raise KhademError("no trial of this study has completed yet") from None
        return {**trial.params, "value": trial.value}

    def results(self) -> pd.DataFrame:
        """One row a trial, as ``JobGroup.results()`` has them, with ``trial`` and ``objective``."""
        from .frames import group_frame
        from .handles import JobHandle

        numbers_ = sorted(self._trials)
        handles = [JobHandle(self.queue, self._trials[n][0], self.fn.name, self._trials[n][1])
                   for n in numbers_]
        records = self.queue.run(self.queue.manager.get_jobs([h.id for h in handles]))
        frame = group_frame(handles, records, pruned=self.pruner is not None)
        frame.insert(0, "trial", numbers_)
        frame["objective"] = [objective_of(r, self.metric) for r in records]
        return frame

    def cancel(self) -> None:
        """Stop asking for trials and cancel the ones in flight."""
        self._task.cancel()
        running = [job for job, _ in self._trials.values()]
        if running:
            self.queue.run(self.queue.manager.driver.cancel(running, "cancelled: the study was cancelled"))

    def progress(self) -> tuple[str, int, int, float | None]:
        """Its name, the trials ended, of how many, and the best value so far (``None``: no
        trial completed yet): what the panel shows."""
        try:
            best: float | None = self.study.best_value
        except ValueError:
            best = None
        return self.name or "(unnamed)", len(self._told), self.n_trials, best

    def __repr__(self) -> str:
        return (f"<Study {self.name or '(unnamed)'}: {len(self._told)} of {self.n_trials} trials ended, "
                f"{self.mode} {self.metric}>")
