"""``khadem-nb worker``: one OS process working a queue until told to stop.

What a job prints or logs goes to its record (while it runs, see ``context``), not to the
worker's output. SIGTERM, SIGINT or SIGUSR1 (the warning Slurm sends before a job's time
runs out, with ``--signal=B:USR1@60``) stop it gracefully: it stops claiming, tells its running
jobs (``preempted()``: they may checkpoint and give way), lets them finish for ``--grace``
seconds, then gives whatever it still holds back to the queue. A second signal stops it at once
(held jobs are still released, or reclaimed when their lease expires).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import limits
from ..config import SECRET_ENV
from ..errors import ConfigError
from ..manager import QueueManager
from ..runtime import capture
from ..runtime.presence import check_launch_environment

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # each stops the worker gracefully

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    queue_url: str
    imports: Sequence[str] = ()
    queues: Sequence[str] = ()
    concurrency: int = 1
    max_jobs: int | None = None
    burst: bool = False
    grace_s: float = 30.0
    lease_s: float | None = None
    prefetch: int | None = None
    isolation: str | None = None
    trust_code: bool = False
    strict_versions: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    resources: str | None = None  # "gpu=4,mem_gb=64"
    artifacts: str | None = None  # the artifact store's URL (queue.artifacts)


def import_job_modules(modules: Sequence[str]) -> None:
    """Import the modules that define jobs, so their classes register; current folder first."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"--import {name}: cannot import it ({exc}); is it on PYTHONPATH?") from exc


def _serve_metrics(options: WorkerOptions, monitor: Any, manager: QueueManager) -> Any:
    """Start the ``--metrics-port`` server; a port that cannot be bound is a ``ConfigError``."""
    from .prometheus import serve_worker_metrics

    port = limits.count(options.metrics_port, "--metrics-port")
    try:
        return serve_worker_metrics(port, options.metrics_host, monitor, manager, asyncio.get_running_loop(),
                                    options.queues)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen on {options.metrics_host}:{port} "
                          f"({exc.strerror or exc})") from None


async def run_worker_process(options: WorkerOptions) -> int:
    """Run until stopped; returns how many jobs this process handled."""
    limits.seconds(options.grace_s, "--grace", kind="grace")
    # read once and taken out of the environment: the jobs this process runs, and the child
    # processes it starts, cannot read the secret that signs and seals shipped code
    secret = os.environ.pop(SECRET_ENV, None)
    differences = check_launch_environment(options.strict_versions)
    if differences:
        logger.warning("this worker's environment differs from the one that launched it: %s",
                       "; ".join(differences))
    import_job_modules(options.imports)
    config: dict[str, object] = {"url": options.queue_url, "trust_code": options.trust_code,
                                 "strict_versions": options.strict_versions}
    if secret and options.trust_code:
        config["secret"] = secret
    config.update({key: value for key, value in (("lease", options.lease_s), ("artifacts", options.artifacts))
                   if value is not None})
    monitor = None
    if options.metrics_port is not None:
        try:
            from .prometheus import PrometheusMonitor

            monitor = PrometheusMonitor()
        except ImportError as exc:
            raise ConfigError(f"--metrics-port needs prometheus_client ({exc}): "
                              'pip install "khadem_nb[metrics]"') from None
    manager = await QueueManager({"queue": config}, monitor=monitor).init()
    manager.artifacts  # noqa: B018 - a store that cannot be opened stops the worker here, not in a job
    metrics_server = None if monitor is None else _serve_metrics(options, monitor, manager)
    worker = await manager.start_worker(
        max_jobs=options.max_jobs, concurrency=options.concurrency, burst=options.burst,
        prefetch=options.prefetch, queues=list(options.queues) or None, run_in_background=True,
        delay=1.0, isolation=options.isolation, resources=options.resources,
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        grace = options.grace_s if not stopping else 0.0
        logger.info("received %s: stopping (grace %.0fs)", signal.Signals(signum).name, grace)
        stopping.append(loop.create_task(worker.stop(grace=grace)))

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    capture.install()  # a job's prints and log lines go to its record, as they do in a notebook
    logger.info("worker %d on %s (queues %s, concurrency %d%s)", os.getpid(),
                manager.settings.redacted_url(), worker.queues, options.concurrency,
                f", resources {options.resources}" if options.resources else "")
    executor = manager.executor
    try:
        await worker.run()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        capture.uninstall()
        if metrics_server is not None:
            metrics_server.shutdown()
        await manager.close()
    logger.info("worker %d stopped after %d jobs", os.getpid(), worker.processed)
    abandoned = executor.jobs_on_threads()
    if abandoned:
        exit_now(abandoned)
    return worker.processed


def exit_now(abandoned: Sequence[Any]) -> None:
    """End this process although sync jobs still run on its threads after the grace: a thread
    cannot be stopped, their jobs are already back in the queue (or go back when their lease
    expires), and another worker may start them, so this one must not keep running them.
    The log names them; stored state is flushed (the driver is closed), then ``os._exit``."""
    logger.warning("worker %d exits with %d job(s) still running on its threads after the grace, "
                   "abandoned here and back in the queue: %s", os.getpid(), len(abandoned),
                   ", ".join(f"{r.name} ({r.id})" for r in abandoned))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
