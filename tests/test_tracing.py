"""OpenTelemetry: a dispatch's trace context travels with the job on every driver; attempt spans
are children of the dispatching span on the first attempt and linked to it on retries
(collected with the SDK's in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QUEUED_DRIVERS, make_manager
from jobs import Echo, Flaky
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from khadem_nb import JobStatus
from khadem_nb.tracing import TRACE_KEY, instrument

Traced = tuple[TracerProvider, InMemorySpanExporter]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.mark.parametrize("driver", QUEUED_DRIVERS)
async def test_attempt_spans_follow_the_dispatching_span(driver: str, tmp_path: Path, traced: Traced) -> None:
    provider, exporter = traced
    manager = await make_manager(driver, tmp_path)
    try:
        instrument(manager, provider)
        tracer = provider.get_tracer("the application")
        with tracer.start_as_current_span("POST /signup") as request:
            flaky = await manager.dispatch(Flaky(succeed_on=2), max_attempts=3)
        untraced = await manager.dispatch(Echo("no trace around me"))
        stored = await manager.get_job(flaky)
        assert "traceparent" in stored.meta[TRACE_KEY]
        assert TRACE_KEY not in (await manager.get_job(untraced)).meta  # no current span: nothing added
        await manager.start_worker(burst=True, delay=0.02)
        await manager.wait([flaky, untraced], timeout=20)
        assert (await manager.get_job(flaky)).status is JobStatus.COMPLETED

        spans = {(s.name, s.attributes["khadem.attempt"]): s for s in exporter.get_finished_spans()
                 if s.name.startswith("run ")}
        first, second = spans[("run Flaky", 1)], spans[("run Flaky", 2)]
        origin = request.get_span_context()
        assert first.kind is SpanKind.CONSUMER
        assert first.parent is not None and first.parent.span_id == origin.span_id
        assert first.context.trace_id == origin.trace_id
        assert first.status.status_code is StatusCode.ERROR
        assert [e.name for e in first.events] == ["exception"]
        assert first.attributes["messaging.message.id"] == flaky
        assert first.attributes["messaging.destination.name"] == "default"
        assert second.parent is None and second.context.trace_id != origin.trace_id
        assert [(link.context.trace_id, link.context.span_id) for link in second.links] == \
            [(origin.trace_id, origin.span_id)]
        assert second.status.status_code is StatusCode.UNSET
        alone = spans[("run Echo", 1)]
        assert alone.parent is None and not alone.links
    finally:
        await manager.purge()
        await manager.close()
