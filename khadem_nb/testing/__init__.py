"""A testing kit for applications and notebooks that use khadem_nb.

``QueueFake`` records what a manager (or a notebook ``Queue``) dispatches, asserts on it, runs
the recorded jobs through the real executor, and moves the queue's clock on purpose. The pytest
plugin (``khadem_nb.testing.plugin``, installed with the package) adds the ``khadem_queue`` and
``khadem_fake`` fixtures. See docs/testing.md.
"""

from .fake import DispatchedJob, FakeDriver, QueueFake, VirtualClock

__all__ = ["DispatchedJob", "FakeDriver", "QueueFake", "VirtualClock"]
