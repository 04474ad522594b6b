"""Which artifact store a queue uses: ``queue.artifacts`` when given, else the driver's default.

A file or SQLite queue keeps its artifacts in a folder beside it (the queue's path with
``.artifacts`` appended: ``runs.db.artifacts/``); a memory queue in a temporary folder of its
own, removed when the queue closes; a Redis or PostgreSQL queue has none unless one is given
(its workers may run on other machines, which a local folder would not reach).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable

from ..config import QueueSettings
from .store import ArtifactStore, stores

WITH_A_DEFAULT = ("file", "sqlite", "memory", "sync")  # drivers whose queues have a store unless given one


class QueueArtifacts:
    """The store of one queue, opened on first use (most queues never need it), and removed at
    close when it is a memory queue's temporary folder."""

    def __init__(self, settings_of: Callable[[], QueueSettings]) -> None:
        self._settings_of = settings_of  # read at first use: a notebook encodes before it opens
        self._settings: QueueSettings | None = None
        self._store: ArtifactStore | None = None
        self._temporary: str | None = None

    @property
    def settings(self) -> QueueSettings:
        if self._settings is None:
            self._settings = self._settings_of()
        return self._settings

    @property
    def configured(self) -> bool:
        """Whether the queue has a store, given or by default (nothing is opened to say so)."""
        return self.settings.artifacts is not None or self.settings.driver in WITH_A_DEFAULT

    @property
    def in_use(self) -> bool:
        """Whether the store may hold objects to collect: a configured one, or a memory queue's
        temporary folder once opened."""
        if self.settings.artifacts is None and self.settings.driver in ("memory", "sync"):
            return self._store is not None
        return self.configured

    def store(self) -> ArtifactStore | None:
        """The store (``ConfigError`` when its URL cannot be opened); ``None`` without one."""
        if self._store is None and self.configured:
            url = self.settings.artifacts
            if url is None and self.settings.path and self.settings.driver in ("file", "sqlite"):
                url = f"{self.settings.path.rstrip('/')}.artifacts"
            elif url is None:
                url = self._temporary = tempfile.mkdtemp(prefix="khadem-artifacts-")
            self._store = ArtifactStore(url, self.settings.artifacts_options,
                                        max_artifact=self.settings.max_artifact,
                                        inline_limit=self.settings.inline_limit)
            stores.register(self._store)
        return self._store

    def close(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None
            self._store = None
