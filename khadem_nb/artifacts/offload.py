"""Which values of a job's arguments or result go to the artifact store, and how they come back.

Before a value is encoded, :func:`offload` replaces, at any depth of dicts, lists and tuples,
numpy arrays and bytes over ``SMALL`` bytes, pandas DataFrames and ``kn.artifact`` files by
references to objects written to the store. After it is encoded, :func:`shrink` moves any part
of the JSON still over ``queue.inline_limit`` to the store as a JSON object. The record keeps
only references; :func:`ArtifactRef.load` (and ``store.load`` over a whole value) reads them.

Without a store (a Redis or PostgreSQL queue without ``queue.artifacts``) arrays and bytes stay
in the record as JSON, up to ``queue.max_payload`` as before; a DataFrame or a file, which
JSON cannot hold, is a ``SerializationError`` saying how to configure a store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import SerializationError
from .refs import ArtifactRef, FileArtifact
from .store import ArtifactStore

SMALL = 4096  # bytes of an array or a bytes value that stay in the record
MAX_DEPTH = 100  # containers looked into, as deep as encoding allows (serializer.MAX_DEPTH)
_PLAIN = frozenset({str, int, float, bool, type(None)})
TAG = "__kn__"
NO_STORE = ("needs an artifact store, which this queue has none of: give one with "
            "kn.Queue(url, artifacts='s3://bucket/prefix' or a folder), the queue.artifacts setting, "
            "or khadem-nb worker --artifacts URL")


StoreOf = Callable[[], "ArtifactStore | None"]  # the store, opened on first call (None: there is none)


def offload(value: Any, store: StoreOf, what: str) -> Any:
    """``value`` with its large parts written to the store and replaced by references; the
    store is opened only when a value needs it. Containers deeper than ``MAX_DEPTH`` are left
    as they are (encoding refuses them, naming where)."""
    if type(value) is dict:
        for item in value.values():  # the usual arguments: plain values, nothing to look into
            if type(item) not in _PLAIN:
                break
        else:
            return value
    return _offload(value, store, what, 0)


def _offload(value: Any, store: StoreOf, path: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _PLAIN or depth > MAX_DEPTH:
        return value
    if kind is dict:
        items = {k: _offload(v, store, (path, k), depth + 1) for k, v in value.items()}
        return items if any(items[k] is not v for k, v in value.items()) else value
    if kind is list or kind is tuple:
        if all(type(v) in _PLAIN for v in value):
            return value
        seq = [_offload(v, store, (path, i), depth + 1) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(seq, value, strict=True)):
            return value
        return seq if kind is list else tuple(seq)
    if isinstance(value, FileArtifact) or kind.__name__ == "DataFrame":
        opened = store()
        if opened is None:
            what = "a file" if isinstance(value, FileArtifact) else "a DataFrame"
            raise SerializationError(f"{_where(path)} is {what}, which {NO_STORE}")
        return opened.put(value, _where(path))
    large = (value.nbytes > SMALL if kind.__name__ == "ndarray" and kind.__module__ == "numpy"
             else isinstance(value, bytes | bytearray) and len(value) > SMALL)
    if large and (opened := store()) is not None:
        return opened.put(value, _where(path))
    return value


def _where(path: Any) -> str:
    """A value's place, spelled out only when it is stored or refused (see ``serializer.where``)."""
    from ..serializer import where

    return where(path)


def shrink(encoded: Any, store: ArtifactStore, limit: int, what: str, *, root_may_move: bool) -> Any:
    """Encoded JSON data (over ``limit``) with each part over ``limit`` bytes moved to the store
    as a JSON object, inner parts first, until the whole fits. A payload's top-level object stays a dict
    (``root_may_move`` false): only its values move; a result may move whole."""
    from ..serializer import dumps

    if root_may_move:
        return _shrink_part(encoded, dumps(encoded), store, limit, dumps, what)
    if type(encoded) is not dict or TAG in encoded:
        return encoded
    return {key: _shrink_part(item, dumps(item), store, limit, dumps, f"{what}[{key!r}]")
            for key, item in encoded.items()}


def _shrink_part(node: Any, text: str, store: ArtifactStore, limit: int, dumps: Any, what: str) -> Any:
    if len(text) <= limit:
        return node
    if type(node) is dict and TAG not in node:
        node = {k: _shrink_part(v, dumps(v), store, limit, dumps, f"{what}[{k!r}]") for k, v in node.items()}
    elif type(node) is list:
        node = [_shrink_part(v, dumps(v), store, limit, dumps, f"{what}[{i}]") for i, v in enumerate(node)]
    else:
        return _as_ref(store.put_json(text, what))
    text = dumps(node)
    return node if len(text) <= limit else _as_ref(store.put_json(text, what))


def _as_ref(ref: ArtifactRef) -> dict[str, Any]:
    return {TAG: "artifact", **ref.to_json()}
