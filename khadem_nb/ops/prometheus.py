"""Prometheus metrics through prometheus_client, each set in a registry of its own.

- :class:`PrometheusMonitor` counts what this process runs: ``khadem_jobs_total{queue,job,status}``
  (status ``completed``, ``failed`` or ``retried``, one per finished attempt) and the histogram
  ``khadem_job_duration_seconds{queue,job}``. ``khadem-nb worker --metrics-port`` serves it.
- :class:`QueueGauges` holds ``khadem_queue_jobs{queue,status}``, the stored records by status,
  refreshed from the queue before each scrape (the dashboard's ``/metrics`` and the worker's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..job import JobRecord, JobStatus
from ..monitor import BasicQueueMonitor

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from ..manager import QueueManager

logger = logging.getLogger(__name__)

#: seconds: from a no-op to a long training step
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 7200.0)
#: how long a scrape waits for the queue's counts
SCRAPE_TIMEOUT_S = 5.0


def new_registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry(auto_describe=True)


class PrometheusMonitor(BasicQueueMonitor):
    """The basic counts, plus Prometheus counters and a duration histogram in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import Counter, Histogram

        super().__init__()
        self.registry = registry if registry is not None else new_registry()
        self.jobs_total = Counter("khadem_jobs", "Job attempts finished by this process, by outcome",
                                  ["queue", "job", "status"], registry=self.registry)
        self.duration = Histogram("khadem_job_duration_seconds", "Time a job attempt ran",
                                  ["queue", "job"], buckets=DURATION_BUCKETS, registry=self.registry)

    def _finished(self, record: JobRecord, duration_ms: float, status: str) -> None:
        self.jobs_total.labels(record.queue, record.name, status).inc()
        self.duration.labels(record.queue, record.name).observe(duration_ms / 1000)

    def job_completed(self, record: JobRecord, duration_ms: float) -> None:
        super().job_completed(record, duration_ms)
        self._finished(record, duration_ms, "completed")

    def job_failed(self, record: JobRecord, duration_ms: float) -> None:
        super().job_failed(record, duration_ms)
        self._finished(record, duration_ms, "failed")

    def job_retried(self, record: JobRecord, duration_ms: float) -> None:
        super().job_retried(record, duration_ms)
        self._finished(record, duration_ms, "retried")


class QueueGauges:
    """``khadem_queue_jobs{queue,status}``: counts per queue and status, read from the queue."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for queue, counts in sorted(self.counts.items()):
            for status in JobStatus:
                family.add_metric([queue, status.value], counts.get(status.value, 0))
        yield family

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily("khadem_queue_jobs", "Stored jobs by queue and status",
                                 labels=["queue", "status"])

    async def refresh(self, manager: QueueManager, queues: Iterable[str] | None = None) -> None:
        """Read the counts of ``queues`` (every queue the driver names if ``None``)."""
        names = list(queues) if queues is not None else await manager.driver.queue_names()
        self.counts = {queue: await manager.counts(queue) for queue in names or [manager.settings.name]}


class RefreshingGauges(QueueGauges):
    """Queue gauges that read the counts on ``loop`` when scraped from another thread (the
    worker's metrics server); the last counts are served if that fails."""

    def __init__(self, registry: CollectorRegistry, manager: QueueManager, loop: asyncio.AbstractEventLoop,
                 queues: Iterable[str] | None) -> None:
        self.manager, self.loop = manager, loop
        self.queues = list(queues) if queues else None
        super().__init__(registry)

    def collect(self) -> Iterator[Metric]:
        future = asyncio.run_coroutine_threadsafe(self.refresh(self.manager, self.queues), self.loop)
        try:
            future.result(SCRAPE_TIMEOUT_S)
        except Exception as exc:
            future.cancel()
            logger.warning("metrics: reading the queue's counts failed: %s", exc)
        return super().collect()


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text format of ``registry`` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int, host: str, monitor: PrometheusMonitor, manager: QueueManager,
                         loop: asyncio.AbstractEventLoop, queues: Iterable[str] | None) -> Any:
    """Serve ``monitor``'s registry and the queue gauges on ``host:port`` from a thread.
    Returns the server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    RefreshingGauges(monitor.registry, manager, loop, queues)
    server, _thread = start_http_server(port, addr=host, registry=monitor.registry)
    return server
