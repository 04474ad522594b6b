"""JSON with a defined set of extra types, and job <-> record conversion.

Plain JSON values pass through untouched. These extra types are encoded as tagged objects
``{"__kn__": <tag>, ...}`` and decoded back to the same type:

==========================  ==========================================
type                        tag
==========================  ==========================================
``datetime``                ``datetime`` (ISO 8601, offset kept)
``date``                    ``date``
``timedelta``               ``timedelta`` (seconds)
``Decimal``                 ``decimal`` (string, exact)
``UUID``                    ``uuid``
``tuple``                   ``tuple``
``bytes``                   ``bytes`` (base64)
``set`` / ``frozenset``     ``set``
numpy scalar                ``np.scalar`` (dtype + value); ``float64``/``str_`` subclass
                            ``float``/``str`` and come back as those
numpy array                 ``np.array`` (dtype + shape + nested list)
non-finite ``float``        ``float`` (``"nan"``, ``"inf"``, ``"-inf"``)
``ArtifactRef``             ``artifact`` (a value kept in the artifact store)
dict with a ``__kn__`` key  ``dict`` (escaped so it cannot be mistaken for a tag)
==========================  ==========================================

Anything else is a :class:`SerializationError` naming where it was found. Nothing is pickled.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .artifacts.offload import offload, shrink
from .artifacts.refs import ArtifactRef
from .artifacts.store import load
from .errors import SerializationError, UnknownJobError

if TYPE_CHECKING:
    from .artifacts.opening import QueueArtifacts
    from .artifacts.store import ArtifactStore
    from .job import QueueJob
    from .registry import JobFactoryRegistry

TAG = "__kn__"
MAX_DEPTH = 100  # containers nested in one argument or result
_PRIMITIVES = (str, int, bool, type(None))
_PLAIN = frozenset({str, int, float, bool, type(None)})  # exact types JSON parsing gives back as is


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")  # only if the user already imported it: never import numpy


# Where a value sits, for error messages: a root name, or ``(parent, segment)`` with segment an
# index, a key, or None for "an item of a set". Built as tuples and spelled out only on error,
# so encoding pays nothing for good messages.
Path = str | tuple[Any, Any]


def where(path: Path) -> str:
    """Spell out a path: ``job argument['xs'][2]`` (a very deep one with its middle elided)."""
    segments: list[str] = []
    while isinstance(path, tuple):
        path, segment = path
        segments.append("{}" if segment is None else f"[{segment!r}]")
    segments.reverse()
    if len(segments) > 12:
        segments = [*segments[:6], "...", *segments[-6:]]
    return path + "".join(segments)


def encode_value(value: Any, path: Path = "value", depth: int = 0) -> Any:
    """Turn ``value`` into plain JSON data, tagging the extra types; ``path`` names it in errors.
    Containers nest at most ``MAX_DEPTH`` levels (``depth`` counts them)."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if depth >= MAX_DEPTH:
        raise SerializationError(f"{where(path)} nests containers more than {MAX_DEPTH} levels deep, "
                                 "the most khadem_nb stores")
    if isinstance(value, list):
        return [encode_value(item, (path, i), depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _encode_dict(value, path, depth)
    return _encode_extra(value, path, depth)


def _encode_dict(value: Mapping[Any, Any], path: Path, depth: int = 0) -> Any:
    encoded = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SerializationError(f"{where(path)} has a key {key!r} of type "
                                     f"{type(key).__name__}; JSON object keys must be str")
        encoded[key] = encode_value(item, (path, key), depth + 1)
    return _escaped(encoded)


def _escaped(encoded: dict[str, Any]) -> dict[str, Any]:
    """An encoded dict as stored: wrapped when one of its keys is the tag itself."""
    return {TAG: "dict", "v": encoded} if TAG in encoded else encoded


def _encode_extra(value: Any, path: Path, depth: int) -> Any:  # noqa: C901 - one flat dispatch on type
    if isinstance(value, datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, timedelta):
        return {TAG: "timedelta", "v": value.total_seconds()}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, tuple):
        return {TAG: "tuple", "v": [encode_value(x, (path, i), depth + 1) for i, x in enumerate(value)]}
    if isinstance(value, bytes | bytearray):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        items = [encode_value(x, (path, None), depth + 1) for x in value]
        return {TAG: "set", "v": sorted(items, key=repr)}
    if isinstance(value, ArtifactRef):
        return {TAG: "artifact", **value.to_json()}
    np = _numpy()
    if np is not None:
        if isinstance(value, np.ndarray):
            return _encode_array(value, path)
        if isinstance(value, np.generic):
            return _encode_numpy_scalar(value, path)
    raise SerializationError(
        f"{where(path)} is of type {type(value).__module__}.{type(value).__qualname__}, which "
        "khadem_nb cannot store as JSON (supported: JSON types, datetime, date, timedelta, Decimal, "
        "UUID, tuple, bytes, set, numpy scalars and arrays; with an artifact store also DataFrames "
        "and kn.artifact files)"
    )


def _encode_array(array: Any, path: Path) -> Any:
    if array.dtype.kind not in "biufcUM?":
        raise SerializationError(
            f"{where(path)} is a numpy array of dtype {array.dtype}, which is not supported")
    if array.dtype.kind == "c":
        data: Any = [[z.real, z.imag] for z in array.ravel().tolist()]
    elif array.dtype.kind == "M":
        data = [str(x) for x in array.ravel()]
    else:
        data = array.ravel().tolist()
    return {TAG: "np.array", "dtype": array.dtype.str, "shape": list(array.shape),
            "v": encode_value(data, path)}


def _encode_numpy_scalar(value: Any, path: Path) -> Any:
    kind = value.dtype.kind
    if kind == "c":
        item: Any = [value.real.item(), value.imag.item()]
    elif kind in "biuf?":
        item = value.item()
    elif kind == "U" or kind == "M":
        item = str(value)
    else:
        raise SerializationError(f"{where(path)} is a numpy {value.dtype} scalar, which is not supported")
    return {TAG: "np.scalar", "dtype": value.dtype.str, "v": encode_value(item, path)}


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    if isinstance(value, dict):
        tag = value.get(TAG)
        if tag is None:
            return _decode_dict(value)
        return _decode_tagged(tag, value)
    return value


def _decode_dict(value: dict[str, Any]) -> dict[str, Any]:
    # plain values are copied without a call each: most job arguments are numbers and strings
    decoded = {}
    for key, item in value.items():
        decoded[key] = item if type(item) in _PLAIN else decode_value(item)
    return decoded


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "float": lambda d: float(d["v"]),
    "datetime": lambda d: datetime.fromisoformat(d["v"]),
    "date": lambda d: date.fromisoformat(d["v"]),
    "timedelta": lambda d: timedelta(seconds=d["v"]),
    "decimal": lambda d: Decimal(d["v"]),
    "uuid": lambda d: UUID(d["v"]),
    "tuple": lambda d: tuple(decode_value(d["v"])),
    "bytes": lambda d: base64.b64decode(d["v"]),
    "set": lambda d: set(decode_value(d["v"])),
    "dict": lambda d: _decode_dict(d["v"]),
    "artifact": ArtifactRef.from_json,
}


def _decode_tagged(tag: str, value: dict[str, Any]) -> Any:
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(value)
    if tag in ("np.array", "np.scalar"):
        return _decode_numpy(tag, value)
    raise SerializationError(f"unknown tagged value {tag!r}; valid tags: {sorted(_DECODERS)}")


def _decode_numpy(tag: str, value: dict[str, Any]) -> Any:
    try:
        import numpy as np
    except ImportError as exc:  # pragma: no cover - numpy is a dev dependency
        raise SerializationError(f"a stored value is a numpy {tag}, but numpy is not installed") from exc
    dtype = np.dtype(value["dtype"])
    data = decode_value(value["v"])
    if dtype.kind == "c":
        data = _complex_from_pairs(data)
    if tag == "np.scalar":
        return dtype.type(data) if dtype.kind == "U" else np.array(data, dtype=dtype)[()]
    return np.array(data, dtype=dtype).reshape(value["shape"])


def _complex_from_pairs(data: Any) -> Any:
    if data and isinstance(data[0], list):
        return [complex(re, im) for re, im in data]
    return complex(data[0], data[1]) if isinstance(data, list) else data


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The C encoder behind it, built once: JSONEncoder.encode builds a new one on every call, which
# costs more than encoding a small payload (more than 5 % of a memory-queue job end to end,
# see bench/RESULTS.md). No circular check: encode_value output is a tree.
_c_encode = getattr(json.encoder, "c_make_encoder", None)
_c_encoder = None if _c_encode is None else _c_encode(
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)


def dumps(value: Any) -> str:
    """Compact, strict JSON text of already-encoded data."""
    if _c_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return _ENCODER.encode(value)
    if isinstance(value, str):
        return json.encoder.encode_basestring(value)
    return "".join(_c_encoder(value, 0))


def encode_arguments(params: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """A call's keyword arguments encoded as ``encode_job`` encodes a ``{"kwargs": ...}``
    payload's (the same depth budget, a ``__kn__`` key escaped the same way); ``where(name)``
    names an argument in an error."""
    return _escaped({name: encode_value(value, where(name), 2) for name, value in params.items()})


def canonical_json(value: Any) -> str:
    """Encoded ``value`` as compact JSON with the keys of every object sorted: the same text
    for the same value in any process (sweep and unique keys, seals of shipped jobs)."""
    return _CANONICAL.encode(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_size(value: Any, limit: int, what: str) -> None:
    """``SerializationError`` when encoded ``value`` is over ``limit`` bytes as JSON (the
    ``queue.max_payload`` a record holds inline). Dicts of plain values, nested or not, whose
    JSON cannot exceed ``limit`` pass without being encoded here: the usual arguments of a
    job, and a notebook call's ``{"kwargs": {...}}``."""
    if type(value) is dict and _json_bound(value, limit) <= limit:
        return
    text = dumps(value)
    found = len(text) if len(text) * 4 <= limit else len(text.encode("utf-8"))
    if found > limit:
        raise SerializationError(
            f"{what} is {found:,} bytes as JSON, over queue.max_payload ({limit:,} bytes): pass a path "
            "or a reference to large data instead, give the queue an artifact store (queue.artifacts), "
            "or raise queue.max_payload")


def fits(value: Any, limit: int) -> bool:
    """Whether encoded ``value`` takes at most ``limit`` characters as JSON; dicts of plain
    values whose JSON cannot be longer pass without being encoded."""
    if type(value) is dict and _json_bound(value, limit) <= limit:
        return True
    return len(dumps(value)) <= limit


def _json_bound(value: dict[str, Any], limit: int) -> int:
    """At least as many bytes as ``value`` takes as JSON (each character at most 6 bytes
    escaped, each number at most 32), for dicts of strings, numbers and such dicts; past
    ``limit``, or on any other value, ``limit + 1``: the caller encodes it to know."""
    total = 2
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            total += 6 * (len(key) + len(item)) + 6
        elif kind in _PLAIN:
            total += 6 * len(key) + 36
        elif kind is dict:
            total += 6 * len(key) + 6 + _json_bound(item, limit - total)
        else:
            return limit + 1
        if total > limit:
            return limit + 1
    return total


class UnreadablePayload(str):
    """Stands in for a payload that could not be parsed from storage; running it fails the job."""


class QueueJobSerializer:
    """Converts jobs to JSON payloads and back, through the job-factory registry."""

    def __init__(self, factories: JobFactoryRegistry) -> None:
        self.factories = factories
        #: the queue's artifact store, where large values go (the manager sets it)
        self.artifacts: QueueArtifacts | None = None
        self._inline_limit = -1  # queue.inline_limit where there is a store, 0 without; -1: not read yet
        # per job class whose name is the class's (the classmethod: fixed once the class is
        # registered): the name and how errors name its arguments; None where each job names
        # itself (a cell's job functions share one class)
        self._names: dict[type, tuple[str, str] | None] = {}

    def encode_job(self, job: QueueJob) -> tuple[str, Any]:
        """Return ``(job name, encoded payload)``; unsupported values raise at once."""
        cls = type(job)
        names = self._names.get(cls)
        if names is None:
            name = job.job_name()
            names = (name, f"{name} argument")
            if cls not in self._names:
                self._names[cls] = names if getattr(cls.job_name, "__self__", None) is cls else None
        data = job.to_json()
        if not isinstance(data, dict):
            raise SerializationError(
                f"{names[0]}.to_json() returned {type(data).__name__}; it must return a dict"
            )
        return names[0], self.encode_large(data, names[1], payload=True)

    def encode_large(self, value: Any, what: str, *, payload: bool = False) -> Any:
        """``value`` encoded, its large parts kept in the artifact store (``artifacts.offload``):
        a payload's top level stays a dict, a result may move whole."""
        if not value and type(value) is dict:  # no arguments: nothing to look into or move
            return {}
        value = offload(value, self.store_of, what)
        encoded = _encode_dict(value, what) if payload else encode_value(value, what)
        return self._shrunk(encoded, what, root_may_move=not payload)

    def store_of(self) -> ArtifactStore | None:
        """The artifact store, opened on first use; ``None`` where the queue has none."""
        return None if self.artifacts is None else self.artifacts.store()

    def _shrunk(self, encoded: Any, what: str, *, root_may_move: bool) -> Any:
        """``encoded`` with its parts over ``queue.inline_limit`` moved to the store (if any)."""
        limit = self._inline_limit
        if limit < 0:  # read once from the settings: 0 where the queue has no store
            artifacts = self.artifacts
            configured = artifacts is not None and artifacts.configured
            limit = self._inline_limit = artifacts.settings.inline_limit if artifacts and configured else 0
        if not limit or fits(encoded, limit):
            return encoded
        store = self.store_of()
        assert store is not None  # configured
        return shrink(encoded, store, limit, what, root_may_move=root_may_move)

    def encode_arguments(self, params: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
        """A call's keyword arguments encoded as :func:`encode_arguments` does, their large
        values kept in the artifact store."""
        params = {name: offload(value, self.store_of, where(name)) for name, value in params.items()}
        return self._shrunk(encode_arguments(params, where), "the arguments", root_may_move=False)  # type: ignore[no-any-return]

    def decode_loaded(self, payload: Any) -> Any:
        """A payload decoded, every artifact reference in it loaded (a job's arguments)."""
        return load(decode_value(payload))

    def decode_job(self, name: str, payload: Any) -> QueueJob:
        """Rebuild a job from its name and encoded payload via the registered factory."""
        factory = self.factories.get(name)
        if factory is None or not isinstance(payload, dict):
            raise _undecodable(name, payload, known=factory is not None)
        try:
            return factory(self.decode_loaded(payload))
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"payload of job {name!r} could not be decoded: {exc!r}") from exc


def _undecodable(name: str, payload: Any, *, known: bool) -> SerializationError:
    """Why a job cannot be rebuilt: its stored record was unreadable, no factory has its
    name (``known`` is false), or its payload is not an object."""
    if isinstance(payload, UnreadablePayload):
        return SerializationError(f"the stored record of job {name!r} could not be read: {payload}")
    if known:
        return SerializationError(f"payload of job {name!r} is {type(payload).__name__}, not an object")
    if name.startswith("__main__."):
        return UnknownJobError(
            f"job {name!r} was defined in a notebook cell or a script (module __main__), which "
            "this worker process cannot import. Ship its code (kn.Queue(url, ship_code=True), and "
            "`khadem-nb worker --trust-code`), or move the function into a module and start "
            "workers with `khadem-nb worker --import <module>`"
        )
    return UnknownJobError(
        f"no job factory is registered for {name!r} in this process; import the module "
        "that defines it (worker: --import MODULE) or call QueueFactory.register_job_factory()"
    )
