"""khadem_nb: a job queue for people who work in Jupyter.

The core (``QueueManager``, ``QueueJob``, drivers) works anywhere asyncio does; the notebook
layer (``Queue``, ``progress``) sits on top and is imported lazily.
"""

from __future__ import annotations

from typing import Any

from .artifacts import ArtifactRef, ArtifactStore, artifact, load
from .config import QueueSettings, WorkerSettings, parse_config
from .drivers.base import QueueDriver
from .drivers.registry import QueueDriverRegistry
from .errors import (
    BatchResultError,
    CodeChangedWarning,
    ConfigError,
    CorruptQueueError,
    DriverError,
    DriverUnavailableError,
    DuplicateJobError,
    JobCancelledError,
    JobCrashedError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    KhademError,
    Preempted,
    ReportError,
    ResultTimeoutError,
    RetryJob,
    SchemaVersionError,
    SerializationError,
    Snooze,
    UnknownJobError,
)
from .factory import QueueFactory
from .features.pruning import MedianPruner, OptunaPruner, SuccessiveHalving
from .features.space import intrange, loguniform, uniform
from .job import Failure, JobRecord, JobStatus, QueueJob, QueueJobWithMetadata
from .manager import QueueManager
from .middleware import Middleware
from .monitor import BasicQueueMonitor, QueueMonitor
from .retry import ExponentialBackoff, FixedBackoff
from .runtime.context import cancelled, checkpoint, context, preempted, progress, report, restore
from .runtime.execution import WorkerHooks
from .runtime.worker import QueueWorker
from .serializer import QueueJobSerializer

__version__ = "0.1.0"

_LAZY = {"Queue", "JobHandle", "JobGroup", "JobFunction", "chain"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'khadem_nb' has no attribute {name!r}")


__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "BasicQueueMonitor",
    "BatchResultError",
    "CodeChangedWarning",
    "ConfigError",
    "CorruptQueueError",
    "DriverError",
    "DriverUnavailableError",
    "DuplicateJobError",
    "ExponentialBackoff",
    "Failure",
    "FixedBackoff",
    "JobCancelledError",
    "JobCrashedError",
    "JobError",
    "JobFailedError",
    "JobFunction",
    "JobGroup",
    "JobHandle",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "JobTimeoutError",
    "KhademError",
    "MedianPruner",
    "Middleware",
    "OptunaPruner",
    "Preempted",
    "Queue",
    "QueueDriver",
    "QueueDriverRegistry",
    "QueueFactory",
    "QueueJob",
    "QueueJobSerializer",
    "QueueJobWithMetadata",
    "QueueManager",
    "QueueMonitor",
    "QueueSettings",
    "QueueWorker",
    "ReportError",
    "ResultTimeoutError",
    "RetryJob",
    "SchemaVersionError",
    "SerializationError",
    "Snooze",
    "SuccessiveHalving",
    "UnknownJobError",
    "WorkerHooks",
    "WorkerSettings",
    "__version__",
    "artifact",
    "cancelled",
    "chain",
    "checkpoint",
    "context",
    "intrange",
    "load",
    "loguniform",
    "parse_config",
    "preempted",
    "progress",
    "report",
    "restore",
    "uniform",
]
