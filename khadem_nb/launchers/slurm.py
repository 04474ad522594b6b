"""``on="slurm"``: workers as Slurm batch jobs, submitted with generated ``sbatch`` scripts.

Each worker is one batch job whose script runs the launch's setup command and then ``exec``s
``khadem-nb worker``, so the signals Slurm sends the batch step reach the worker itself:
``--signal=B:USR1@<warning>`` before the time limit or a preemption makes it stop gracefully
(its jobs see ``preempted()``, may checkpoint, and go back without spending an attempt), and
``scancel`` (``stop()``) sends SIGTERM. The secret of a queue that ships code travels in the
job's environment (``sbatch --export=ALL`` of the submitting process), never in the script or
on a command line. The job's output goes to ``<logs>/<name>.log`` on the shared filesystem.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LaunchError
from .handle import ProcessWorker
from .spec import LaunchSpec, new_name

SBATCH_TIMEOUT_S = 60.0
LOGS = "~/.cache/khadem_nb/slurm"
#: Slurm job states in which the job has not started yet, and in which it runs
WAITING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESV_DEL_HOLD", "REQUEUE_HOLD", "SUSPENDED"}


@dataclass(frozen=True)
class SlurmOptions:
    """What each worker's batch job asks Slurm for."""

    partition: str | None = None
    time: str | None = None  # the job's time limit, as sbatch takes it ("02:00:00")
    gres: str | None = None  # "gpu:1"
    cpus: int | None = None  # --cpus-per-task
    mem: str | None = None  # "16G"
    account: str | None = None
    warning: str = "USR1@60"  # --signal=B:<warning>: the worker stops gracefully this long before the end
    sbatch: Sequence[str] = field(default_factory=tuple)  # further sbatch options, as "--qos=high"
    logs: str = LOGS  # where the jobs' output goes (a folder every node and this machine see)

    def directives(self, name: str, log: Path) -> list[str]:
        lines = [f"--job-name=khadem-{name}", f"--output={log}", f"--signal=B:{self.warning}"]
        for option, value in (("partition", self.partition), ("time", self.time), ("gres", self.gres),
                              ("cpus-per-task", self.cpus), ("mem", self.mem), ("account", self.account)):
            if value is not None:
                lines.append(f"--{option}={value}")
        return [*lines, *self.sbatch]


def slurm_options(options: Mapping[str, Any]) -> SlurmOptions:
    """The launch's Slurm options, checked: unknown names are a ``ConfigError`` listing the valid."""
    valid = set(SlurmOptions.__dataclass_fields__)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown Slurm option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    values = dict(options)
    for key in ("partition", "time", "gres", "mem", "account", "warning", "logs"):
        value = values.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"Slurm option {key} must be a non-empty string, got {value!r}")
    cpus = values.get("cpus")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise ConfigError(f"Slurm option cpus must be a positive integer, got {cpus!r}")
    extra = values.get("sbatch", ())
    if isinstance(extra, str) or not all(isinstance(o, str) and o.startswith("--") for o in extra):
        raise ConfigError(f"sbatch takes a list of long options like ['--qos=high'], got {extra!r}")
    values["sbatch"] = tuple(extra)
    return SlurmOptions(**values)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"{name} is not on PATH: launch Slurm workers from a machine that submits to the "
                          "cluster (a login node), or load Slurm's module first")
    return found


class SlurmWorker(ProcessWorker):
    launcher = "slurm"

    def __init__(self, name: str, job_id: str, log: Path, detach: bool) -> None:
        super().__init__(name, socket.gethostname(), detach, log)
        self.job_id = job_id

    def slurm_state(self) -> str | None:
        """The job's state as ``squeue`` says (``PENDING``, ``RUNNING``...), ``None`` once ended."""
        return self._squeue()[0]

    def _squeue(self) -> tuple[str | None, str]:
        """The job's state and the reason it waits, as ``squeue`` says."""
        found = subprocess.run([_tool("squeue"), "--noheader", "--jobs", self.job_id, "--format", "%T %r"],
                               capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S)
        state, _, reason = found.stdout.strip().partition(" ")
        return state or None, reason

    def current_state(self) -> str:
        state = self.slurm_state()
        if state is None:
            return "gone"
        return "queued" if state in WAITING_STATES else "running"

    def waits_in_line(self) -> bool:
        """Pending for a reason the scheduler gave (``Resources``, ``Priority``...), not merely
        submitted a moment ago (reason ``None``)."""
        state, reason = self._squeue()
        return state in WAITING_STATES and reason not in ("", "None")

    def stop_at_exit(self) -> None:
        self._cancel("TERM")

    def _cancel(self, signal_name: str | None) -> None:
        command = [_tool("scancel"), self.job_id]
        if signal_name is not None:  # to the batch step (the worker itself), not to job steps
            command[1:1] = [f"--signal={signal_name}", "--batch"]
        subprocess.run(command, capture_output=True, timeout=SBATCH_TIMEOUT_S)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to a running worker (it finishes or gives back its jobs within ``grace``);
        a job not started yet is cancelled at once."""
        state = self.slurm_state()
        if state is None:
            return
        if state in WAITING_STATES:
            self._cancel(None)
            return
        self._cancel("TERM")
        deadline = grace + 10
        waited = 0.0
        while self.slurm_state() is not None and waited < deadline:
            time.sleep(0.5)
            waited += 0.5
        if self.slurm_state() is not None:
            self._cancel(None)


def batch_script(spec: LaunchSpec, options: SlurmOptions, name: str, log: Path) -> str:
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in options.directives(name, log))]
    if spec.setup:
        lines.append(spec.setup)
    python = spec.python or sys.executable
    lines.append(f"exec {shlex.join([python, *spec.arguments()])}")
    return "\n".join(lines) + "\n"


def start_slurm(spec: LaunchSpec, n: int, options: SlurmOptions) -> list[SlurmWorker]:
    """Submit ``n`` batch jobs, one worker each; ``LaunchError`` with sbatch's own message when
    it refuses one."""
    sbatch = _tool("sbatch")
    logs = Path(os.path.expanduser(options.logs))
    logs.mkdir(parents=True, exist_ok=True)
    workers: list[SlurmWorker] = []
    for _ in range(n):
        name = new_name(socket.gethostname(), "slurm")
        log = logs / f"{name}.log"
        script = batch_script(spec, options, name, log)
        environment = {**os.environ, **spec.environment(name, "slurm")}
        submitted = subprocess.run([sbatch, "--parsable", "--export=ALL"], input=script, env=environment,
                                   capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S, cwd=os.getcwd())
        if submitted.returncode != 0:
            for worker in workers:
                worker.stop(grace=0)
            said = submitted.stderr.strip() or submitted.stdout.strip()
            raise LaunchError(f"sbatch refused the worker's job: {said}")
        job_id = submitted.stdout.strip().split(";")[0]
        workers.append(SlurmWorker(name, job_id, log, spec.detach))
    return workers
