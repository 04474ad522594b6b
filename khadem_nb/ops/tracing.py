"""OpenTelemetry traces that follow a job from the code that dispatched it (the ``otel`` extra).

``instrument(manager)`` adds two things to a manager:

- a dispatch hook that writes the current trace context (W3C ``traceparent``, through the
  global propagator) into the new record's ``meta["trace"]``, which every driver stores with
  the job;
- a middleware that runs each attempt in a ``CONSUMER`` span named ``run <job>``. The first
  attempt's span is a child of the dispatching span; a later attempt starts a trace of its own
  and links to it (the dispatch is long over, and the retry is a new unit of work). A failed
  attempt records its exception and ends with an error status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..job import JobRecord, QueueJob
from ..manager import QueueManager
from ..runtime.context import current_job

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

TRACE_KEY = "trace"  # the record's meta key holding the dispatch's trace context
INSTRUMENTATION = "khadem_nb"


def instrument(manager: QueueManager, tracer_provider: TracerProvider | None = None) -> TracingMiddleware:
    """Trace ``manager``'s dispatches and job runs; returns the middleware it added."""
    from opentelemetry import trace

    tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
    manager.dispatch_hooks.append(inject_context)
    middleware = TracingMiddleware(tracer)
    manager.use(middleware)
    return middleware


def inject_context(record: JobRecord) -> None:
    """Write the current trace context into ``record.meta`` (nothing when there is none)."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    if carrier:
        record.meta[TRACE_KEY] = carrier


class TracingMiddleware:
    """Runs each job attempt in a span: a child of its dispatch on the first attempt, linked to
    it on later ones."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def handle(self, job: QueueJob, call_next: Callable[[], Awaitable[Any]]) -> Any:
        from opentelemetry import trace
        from opentelemetry.propagate import extract
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        context = current_job.get(None)
        record = context.record if context is not None else None
        carrier = record.meta.get(TRACE_KEY) if record is not None else None
        dispatched = extract(carrier) if isinstance(carrier, dict) else None
        attempt = record.attempt if record is not None else job.attempt
        parent, links = dispatched, []
        if dispatched is not None and attempt > 1:
            origin = trace.get_current_span(dispatched).get_span_context()
            parent, links = None, [Link(origin, {"khadem.link": "dispatch"})]
        name = job.job_name()
        attributes: dict[str, str | int] = {"messaging.system": "khadem_nb", "khadem.job": name,
                                            "khadem.attempt": attempt}
        if record is not None:
            attributes["messaging.destination.name"] = record.queue
            attributes["messaging.message.id"] = record.id
        with self.tracer.start_as_current_span(f"run {name}", context=parent, kind=SpanKind.CONSUMER,
                                               links=links, attributes=attributes, record_exception=False,
                                               set_status_on_exception=False) as span:
            try:
                return await call_next()
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
