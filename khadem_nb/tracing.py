"""``khadem_nb.tracing``, the public name of :mod:`khadem_nb.ops.tracing`."""

from .ops.tracing import TRACE_KEY, TracingMiddleware, inject_context, instrument

__all__ = ["TRACE_KEY", "TracingMiddleware", "inject_context", "instrument"]
