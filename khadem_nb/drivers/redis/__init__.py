"""The Redis driver, as a package: ``driver`` (the QueueDriver verbs), ``keys`` (the key
schema), ``connection`` (connections, raw calls, outages), ``settles``, ``notices``, ``wire``
(what the scripts take and give back), ``directory`` (which queue holds a job) and ``lua/``."""

from .driver import RedisDriver

__all__ = ["RedisDriver"]
