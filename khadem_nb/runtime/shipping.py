"""Code on other machines: fingerprints of job code, and signed envelopes of shipped code.

Every job record carries ``code``, a fingerprint of its function's (or class's) code, defaults,
closure and the same-module helpers it calls, but not of where it was defined: running an
unchanged cell again gives the same fingerprint, editing it a new one.

With ``queue.ship_code``, a job defined in ``__main__`` (a notebook cell) or in a module named
in ``queue.ship_modules`` travels as an *envelope*, stored once per fingerprint in the queue's
code store (``QueueDriver.store_code``)::

    khadem-code-1\\n <hmac hex>\\n <header JSON>\\n <cloudpickle bytes>

The header says what the bytes are (kind, job name, the queue store it was made for, SHA-256
of the bytes, Python and cloudpickle versions, the versions of the packages the code refers
to); the HMAC-SHA256 with the shared secret covers the magic, the header and the bytes.

An envelope alone does not let anyone run it: every job record that runs shipped code carries,
in ``code``, the fingerprint and a *seal* (``<fingerprint>.<seal>``), an HMAC-SHA256 with the
same secret over the queue's identity (driver, key prefix or schema, queue name), the job name,
the code's fingerprint and the arguments, made at dispatch. Someone who can write to the
queue's storage but has no secret can neither copy an envelope into another queue's store nor
write records with other names or arguments that a trusting worker would run.

A worker started with ``--trust-code`` checks, in order, the record's seal, the envelope's
format, signature and digest, the store and job name the envelope was made for, the Python
version and the package versions, and unpickles the bytes only after every check passed.
Arguments and results never travel pickled. docs/shipping.md says what this guarantees.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.metadata
import inspect
import json
import logging
import marshal
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SerializationError, ShippedCodeError
from ..job import QueueJob
from ..limits import checked_secret
from ..serializer import canonical_json

if TYPE_CHECKING:
    from ..config import QueueSettings
    from ..drivers.base import QueueDriver
    from ..job import JobRecord

logger = logging.getLogger(__name__)

MAGIC = b"khadem-code-1\n"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


# -- fingerprints -------------------------------------------------------------------------------
def fingerprint(entry: Any) -> str:
    """32 hex digits naming what ``entry`` (a function or a job class) would do when run."""
    digest = hashlib.sha256()
    for part in _code_parts(entry, set()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _code_parts(entry: Any, seen: set[int]) -> Iterator[bytes]:
    if id(entry) in seen:
        return
    seen.add(id(entry))
    if isinstance(entry, type):
        yield from _class_parts(entry, seen)
        return
    function = _function_of(entry)
    if function is None:
        yield repr(entry).encode()
        return
    yield marshal.dumps(_placeless(function.__code__))
    yield repr(function.__defaults__).encode() + repr(function.__kwdefaults__).encode()
    for cell in function.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        yield from _value_parts(value, seen)
    for name in _global_names(function.__code__):
        if name in function.__globals__:
            yield name.encode()
            yield from _value_parts(function.__globals__[name], seen, function.__module__)


def _class_parts(cls: type, seen: set[int]) -> Iterator[bytes]:
    yield f"class {cls.__qualname__}({','.join(b.__qualname__ for b in cls.__bases__)})".encode()
    for name, value in sorted(vars(cls).items()):
        function = _function_of(value)
        if function is not None:
            yield name.encode()
            yield from _code_parts(function, seen)
        elif _is_plain(value) and not name.startswith("__"):
            yield f"{name}={value!r}".encode()


def _value_parts(value: Any, seen: set[int], module: str | None = None) -> Iterator[bytes]:
    """What a closure cell or a global the code uses adds: code of the same module's functions
    and classes, the text of plain values; other modules' objects by name only."""
    owner = getattr(value, "__module__", None)
    if ((callable(value) and (module is None or owner == module)) and _function_of(value) is not None) \
            or (isinstance(value, type) and (module is None or owner == module)):
        yield from _code_parts(value, seen)
    elif isinstance(value, types.ModuleType):
        yield f"module {value.__name__}".encode()
    elif _is_plain(value):
        yield repr(value).encode()
    else:
        yield f"{type(value).__module__}.{type(value).__qualname__}".encode()


def _function_of(value: Any) -> types.FunctionType | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None


def _is_plain(value: Any) -> bool:
    if isinstance(value, bool | int | float | str | bytes | type(None)):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_is_plain(v) for v in value)
    return False


def _placeless(code: types.CodeType) -> types.CodeType:
    """``code`` without its file name and line numbers (a cell run again is the same code)."""
    consts = tuple(_placeless(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename="", co_firstlineno=1, co_linetable=b"", co_consts=consts)


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return sorted(set(names))


# -- envelopes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: its header and the pickled bytes, neither yet trusted."""

    mac: bytes
    head: bytes
    payload: bytes
    header: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        """Split ``data`` without unpickling anything; ``ShippedCodeError("format")`` if it is
        not an envelope."""
        if not isinstance(data, bytes) or not data.startswith(MAGIC):
            raise ShippedCodeError("format", "the stored code is not a khadem_nb code envelope")
        mac, _, rest = data[len(MAGIC):].partition(b"\n")
        head, newline, payload = rest.partition(b"\n")
        if not newline or len(mac) != 64:
            raise ShippedCodeError("format", "the stored code envelope is cut short or damaged")
        return cls(mac, head, payload)

    def verified(self, secret: bytes) -> Envelope:
        """This envelope with its header read, once its signature and digest hold."""
        expected = hmac.new(secret, MAGIC + self.head + b"\n" + self.payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), self.mac):
            raise ShippedCodeError("signature", "its HMAC does not match: the worker's secret differs "
                                   "from the dispatcher's, or the envelope was changed")
        try:
            header = json.loads(self.head)
        except ValueError as exc:
            raise ShippedCodeError("format", f"its header is not JSON ({exc})") from None
        if hashlib.sha256(self.payload).hexdigest() != header.get("digest"):
            raise ShippedCodeError("digest", "the SHA-256 of its code does not match its header")
        return Envelope(self.mac, self.head, self.payload, header)


def seal(entry: Any, *, kind: str, name: str, code: str, secret: bytes, limit: int,
         python: str = PYTHON, extra: dict[str, Any] | None = None) -> bytes:
    """The signed envelope of ``entry`` (pickled by value where it was defined in ``__main__``
    or in a module registered with cloudpickle for that). ``SerializationError`` names what
    cannot be pickled, or says the envelope is over ``limit`` bytes."""
    import cloudpickle

    try:
        payload: bytes = cloudpickle.dumps(entry)
    except Exception as exc:
        raise SerializationError(f"the code of {name} cannot be shipped: {type(exc).__name__}: {exc} "
                                 "(a job's closure and the globals it uses must be picklable; "
                                 "open locks, sockets and files are not)") from None
    header = {"v": 1, "kind": kind, "name": name, "code": code, "python": python,
              "cloudpickle": cloudpickle.__version__, "packages": packages_of(entry),
              "digest": hashlib.sha256(payload).hexdigest(), "size": len(payload), **(extra or {})}
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(secret, MAGIC + head + b"\n" + payload, hashlib.sha256).hexdigest().encode()
    envelope = MAGIC + mac + b"\n" + head + b"\n" + payload
    if len(envelope) > limit:
        raise SerializationError(
            f"the code of {name} ships as {len(envelope) / 2**20:.1f} MiB, over queue.code_limit "
            f"({limit / 2**20:.1f} MiB): it probably closes over large data (an array, a frame); "
            "load that data inside the job instead, or raise queue.code_limit")
    return envelope


def packages_of(entry: Any) -> dict[str, str]:
    """The installed versions of the third-party packages ``entry``'s code refers to."""
    found: set[str] = set()
    for function in _functions(entry):
        for name in _global_names(function.__code__):
            value = function.__globals__.get(name)
            owner = value.__name__ if isinstance(value, types.ModuleType) \
                else getattr(value, "__module__", None)
            if isinstance(owner, str):
                found.add(owner.split(".")[0])
    versions = {}
    for top in sorted(found - set(sys.stdlib_module_names) - {"__main__", "builtins", "khadem_nb"}):
        version = installed_version(top)
        if version is not None:
            versions[top] = version
    return versions


def _functions(entry: Any) -> list[types.FunctionType]:
    if isinstance(entry, type):
        return [f for v in vars(entry).values() if (f := _function_of(v)) is not None]
    function = _function_of(entry)
    return [] if function is None else [function]


def installed_version(top: str) -> str | None:
    """The version of the distribution that provides the top-level package ``top``."""
    for dist in _distributions().get(top, [top]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


# -- seals: who dispatched what -----------------------------------------------------------------
SEAL_MAGIC = b"khadem-job-1\n"
SEAL_SEPARATOR = "."


def store_identity(settings: QueueSettings) -> str:
    """The code store's identity: the driver and the namespace its queues live in (the Redis key
    prefix, the PostgreSQL schema); file and SQLite queues are one store each."""
    if settings.driver == "redis":
        return f"redis:{settings.prefix}"
    if settings.driver == "postgres":
        return f"postgres:{settings.schema.lower()}"
    return settings.driver


def job_seal(secret: bytes, settings: QueueSettings, queue: str, name: str, fingerprint: str,
             payload: Any) -> str:
    """The HMAC-SHA256 (hex) that binds a record to the dispatcher who held ``secret``: over the
    queue's identity, the job name, the code's fingerprint and the arguments (canonical JSON)."""
    message = "\n".join((store_identity(settings), queue, name, fingerprint, canonical_json(payload)))
    return hmac.new(secret, SEAL_MAGIC + message.encode(), hashlib.sha256).hexdigest()


def split_code(code: str) -> tuple[str, str | None]:
    """A record's ``code`` as (fingerprint, seal or ``None``)."""
    fingerprint, _, seal = code.partition(SEAL_SEPARATOR)
    return fingerprint, seal or None


# -- secrets ------------------------------------------------------------------------------------
# -- the dispatching side -----------------------------------------------------------------------
@dataclass(frozen=True)
class Code:
    """What a dispatcher knows of one job definition: its fingerprint, and its envelope if it
    ships."""

    fingerprint: str
    envelope: bytes | None


class CodeShipper:
    """Fingerprints job definitions and ships those that should travel, once each."""

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.ship = settings.ship_code
        self.secret = checked_secret(settings.secret, "queue.ship_code") if self.ship else b""
        self.modules = set(settings.ship_modules)
        for module in settings.ship_modules:
            _ship_by_value(module)
        self._codes: dict[Any, Code] = {}  # by job class or function (each definition its own)
        #: envelopes not yet in this queue's code store, by fingerprint
        self.unsent: dict[str, bytes] = {}
        #: fingerprints of the code this shipper ships, whose records carry a seal
        self.shipped: set[str] = set()

    def sealed(self, fingerprint: str, queue: str, name: str, payload: Any) -> str:
        """The ``code`` of a record that runs shipped code: its fingerprint and its seal."""
        seal = job_seal(self.secret, self.settings, queue, name, fingerprint, payload)
        return f"{fingerprint}{SEAL_SEPARATOR}{seal}"

    def code_of(self, job: QueueJob) -> str:
        """The fingerprint of ``job``'s definition; its envelope is built here the first time."""
        entry = job.code_entry()
        code = self._codes.get(entry)
        if code is None:
            code = self._codes[entry] = self._code(entry, job)
            if code.envelope is not None:
                self.unsent[code.fingerprint] = code.envelope
                self.shipped.add(code.fingerprint)
        return code.fingerprint

    def _code(self, entry: Any, job: QueueJob) -> Code:
        digest = fingerprint(entry)
        module = getattr(entry, "__module__", None)
        if not self.ship or not (module == "__main__" or module in self.modules):
            return Code(digest, None)
        kind = "class" if isinstance(entry, type) else "function"
        envelope = seal(entry, kind=kind, name=job.job_name(), code=digest, secret=self.secret,
                        limit=self.settings.code_limit,
                        extra={"store": store_identity(self.settings), "isolation": job.isolation,
                               "is_async": inspect.iscoroutinefunction(getattr(entry, "handle", entry))})
        return Code(digest, envelope)

    async def send(self, driver: QueueDriver) -> None:
        """Store the envelopes built since the last call (before the jobs that need them)."""
        while self.unsent:
            digest, envelope = next(iter(self.unsent.items()))
            await driver.store_code(digest, envelope)
            del self.unsent[digest]


def _ship_by_value(name: str) -> None:
    import cloudpickle

    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"queue.ship_modules: cannot import {name!r} ({exc})") from None
    cloudpickle.register_pickle_by_value(module)


# -- the working side ---------------------------------------------------------------------------
JobFactory = Callable[[dict[str, Any]], QueueJob]


class ShippedCall(QueueJob):
    """A shipped async job function and its arguments."""

    _abstract_job = True

    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.kwargs = kwargs

    async def handle(self) -> Any:
        return await self.fn(**self.kwargs)

    def code_entry(self) -> Any:
        return self.fn

    def isolated_entry(self) -> tuple[Any, dict[str, Any], str]:
        return self.fn, {"kwargs": self.kwargs}, "function"


class ShippedSyncCall(ShippedCall):
    """A shipped sync job function and its arguments (run on a worker thread)."""

    _abstract_job = True

    def handle(self) -> Any:
        return self.fn(**self.kwargs)


@dataclass(frozen=True)
class Loaded:
    factory: JobFactory
    warnings: tuple[str, ...]
    name: str  # the job name the envelope was made for


class CodeLoader:
    """A worker's shipped code: fetched from the code store, checked, unpickled, kept per
    fingerprint."""

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.trusted = settings.trust_code
        self.strict = settings.strict_versions
        self.secret = checked_secret(settings.secret, "a worker that trusts shipped code") \
            if self.trusted else b""
        self._loaded: dict[str, Loaded] = {}

    async def job_for(self, record: JobRecord, driver: QueueDriver, payload: Any) -> QueueJob | None:
        """Rebuild ``record``'s job from the code shipped under its digest (``None`` if none
        was); an error names the check that failed."""
        digest, seal = split_code(record.code or "")
        loaded = self._loaded.get(digest)
        data = None
        if loaded is None:
            data = await driver.load_code(digest) if digest else None
            if data is None:
                return None
            if not self.trusted:
                raise ShippedCodeError("trust", "this worker does not run shipped code; start it "
                                       "with `khadem-nb worker --trust-code` and the same secret")
        self._check_seal(record, digest, seal)  # before a byte of new code is unpickled
        if loaded is None:
            loaded = self._loaded[digest] = self._load(Envelope.parse(data or b""), digest)
        if record.name != loaded.name:
            raise ShippedCodeError("seal", f"the code {digest} was shipped for the job {loaded.name}, "
                                   f"not {record.name}")
        for warning in loaded.warnings:
            record.meta.setdefault("warnings", [])
            if warning not in record.meta["warnings"]:
                record.meta["warnings"].append(warning)
        return loaded.factory(payload)

    def _check_seal(self, record: JobRecord, digest: str, seal: str | None) -> None:
        """Refuse a record that the holder of the secret did not dispatch as it is now."""
        if seal is None:
            raise ShippedCodeError("seal", "the job record carries no dispatcher's seal (dispatched by "
                                   "an older khadem_nb, or written by someone without the secret)")
        expected = job_seal(self.secret, self.settings, record.queue, record.name, digest, record.payload)
        if not hmac.compare_digest(expected, seal):
            raise ShippedCodeError("seal", "the job record's seal does not match: the worker's secret "
                                   "differs from the dispatcher's, or the record's queue, job name, code "
                                   "or arguments are not what the secret's holder dispatched")

    def _load(self, envelope: Envelope, digest: str) -> Loaded:
        import cloudpickle

        header = envelope.verified(self.secret).header
        if header.get("code") != digest:
            raise ShippedCodeError("digest", f"the envelope stored under {digest} holds the code "
                                   f"{header.get('code')}")
        store = store_identity(self.settings)
        if header.get("store") != store:
            raise ShippedCodeError("seal", f"the envelope was made for the queue store "
                                   f"{header.get('store')!r}, not {store!r}")
        if header.get("python") != PYTHON:
            raise ShippedCodeError("python", f"the code was pickled on Python {header.get('python')} and "
                                   f"this worker runs Python {PYTHON}; run workers on the same version")
        warnings = self._version_warnings(header)
        entry = cloudpickle.loads(envelope.payload)  # signed by the secret's holder, checked above
        logger.info("loaded shipped code %s (%s, %d bytes)", digest, header.get("name"),
                    len(envelope.payload))
        return Loaded(_factory(entry, header), tuple(warnings), str(header.get("name")))

    def _version_warnings(self, header: dict[str, Any]) -> list[str]:
        warnings = []
        for package, version in sorted(dict(header.get("packages") or {}).items()):
            here = installed_version(package)
            if here != version:
                warnings.append(f"{package} is {here or 'not installed'} on this worker, "
                                f"{version} where the code was shipped")
        if warnings and self.strict:
            raise ShippedCodeError("versions", "; ".join(warnings) + " (strict_versions is on)")
        for warning in warnings:
            logger.warning("shipped code %s: %s", header.get("name"), warning)
        return warnings


def _factory(entry: Any, header: dict[str, Any]) -> JobFactory:
    isolation = header.get("isolation")
    if header.get("kind") == "class":
        if not (isinstance(entry, type) and issubclass(entry, QueueJob)):
            raise ShippedCodeError("format", "the envelope's class is not a QueueJob")
        return entry.from_json
    call_class = ShippedCall if header.get("is_async") else ShippedSyncCall

    def build(data: dict[str, Any]) -> QueueJob:
        kwargs = data.get("kwargs")
        if not isinstance(kwargs, dict):
            raise SerializationError(f"payload of {header.get('name')} has no 'kwargs' object")
        call = call_class(entry, kwargs)
        call.isolation = isolation  # type: ignore[misc]
        return call

    return build
