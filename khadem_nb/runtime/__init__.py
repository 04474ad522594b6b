"""What runs jobs: the worker and its loops, the executor, a running job's context, captured
output, process isolation, the schedule ticker, waits for results, and shipped code."""
