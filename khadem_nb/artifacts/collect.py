"""Garbage collection of the artifact store: a mark over the records, a sweep of the objects.

The mark reads every record of the queue (arguments, result and meta, where a checkpoint
points) and the JSON objects they refer to (a part of a value moved to the store may refer to
arrays in turn). The sweep deletes the objects no record refers to that are older than
``queue.artifact_grace``: an object written for a dispatch whose record is not stored yet is
younger than that, and a write of content already stored refreshes its time (see
``ArtifactStore.put``), so a dispatch in flight never loses what it refers to.

A store belongs to one queue: two queues sharing a folder or an S3 prefix would each sweep the
other's objects. The default stores are one a queue; give each queue its own prefix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ..job import JobRecord
from ..serializer import TAG
from .refs import ArtifactRef
from .store import ArtifactStore


def referenced(records: Iterable[JobRecord], store: ArtifactStore) -> set[str]:
    """The digests of this store's objects that ``records`` refer to, at any depth."""
    found: set[str] = set()
    pending: list[ArtifactRef] = []
    for record in records:
        for ref in refs_in([record.payload, record.result, record.meta]):
            if ref.store == store.url and ref.digest not in found:
                found.add(ref.digest)
                if ref.kind == "json":
                    pending.append(ref)
    while pending:  # a JSON object may refer to further objects
        ref = pending.pop()
        try:
            data = json.loads(store.local_file(ref).read_bytes())
        except Exception:  # damaged or gone: nothing more is reachable through it
            continue
        for inner in refs_in(data):
            if inner.store == store.url and inner.digest not in found:
                found.add(inner.digest)
                if inner.kind == "json":
                    pending.append(inner)
    return found


def sweep(store: ArtifactStore, keep: set[str], grace_s: float) -> int:
    """Delete the objects of ``store`` not in ``keep`` and older than ``grace_s`` seconds, and
    temporary files older than that; how many objects were deleted."""
    cutoff = time.time() - grace_s
    doomed = [path for digest, (path, mtime) in store.objects().items()
              if digest not in keep and mtime < cutoff]
    store.delete(doomed)
    store.clear_temporaries(grace_s)
    return len(doomed)


def refs_in(value: Any) -> Iterator[ArtifactRef]:
    """Every artifact reference in encoded JSON data (a record's payload, result or meta)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if item.get(TAG) == "artifact":
                try:
                    yield ArtifactRef.from_json(item)
                except Exception:  # a malformed reference keeps nothing alive
                    continue
            else:
                stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
