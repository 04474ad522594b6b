"""Operating a queue from outside a notebook: the worker process, stats, Prometheus metrics,
OpenTelemetry traces, the demo and terminal output."""
