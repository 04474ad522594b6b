"""A web dashboard for a queue, outside Jupyter: live counts, throughput, running jobs,
failures with tracebacks, search, job pages, actions behind a token, and ``/metrics``.

``khadem-nb dashboard --queue-url URL`` serves it (``serve``); ``app.create_app`` builds the
Starlette app for a manager the caller owns. It needs the ``dashboard`` extra
(``pip install "khadem_nb[dashboard]"``), imported only when used.
"""
