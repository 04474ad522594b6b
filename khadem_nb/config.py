"""Configuration: parsed once into frozen dataclasses; unknown keys and bad values rejected.

Accepted forms: ``None`` (memory), a queue URL (``"sqlite:///runs.db"``), a dict with a
``"queue"`` section (``{"queue": {"driver": "memory"}}``), or an object with a dotted
``get("queue.driver")`` like an application config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from . import limits
from .errors import ConfigError

URL_SCHEMES = {"memory": "memory", "sync": "sync", "sqlite": "sqlite", "file": "file",
               "redis": "redis", "rediss": "redis", "postgresql": "postgres", "postgres": "postgres"}
QUEUE_KEYS = frozenset({
    "driver", "name", "path", "url", "host", "port", "username", "password", "db", "lease",
    "heartbeat", "max_reclaims", "retention", "retention_age", "failed_retention",
    "failed_retention_age", "prefix", "connect_timeout", "workers", "options",
    "ship_code", "ship_modules", "secret", "secret_file", "code_limit", "trust_code", "strict_versions",
    "schema", "max_payload", "artifacts", "artifacts_options", "inline_limit", "max_artifact",
    "artifact_grace", "auto_migrate",
})
WORKER_KEYS = frozenset({"max_jobs", "delay", "timeout", "concurrency", "prefetch", "isolation", "resources"})
SECRET_ENV = "KHADEM_SECRET"
CODE_LIMIT = 16 * 2**20  # bytes of one shipped code envelope, at most (queue.code_limit)
MAX_PAYLOAD = 16 * 2**20  # bytes of a job's arguments or result held in its record (queue.max_payload)
INLINE_LIMIT = 64 * 2**10  # with an artifact store: JSON over this many bytes goes there (queue.inline_limit)
MAX_ARTIFACT = 10 * 2**30  # bytes of one object in the artifact store (queue.max_artifact)
ARTIFACT_GRACE_S = 3600.0  # objects younger than this are never collected (queue.artifact_grace)


class DottedConfig(Protocol):
    def get(self, key: str, default: Any = None, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Defaults for ``start_worker``; each may be overridden per call."""

    max_jobs: int | None = None
    delay_s: float = 0.5  # longest wait for new work before a worker checks its limits again
    timeout_s: float | None = None  # total run time before the worker stops
    concurrency: int = 1
    burst: bool = False  # stop when no job is due (after waiting delay_s for one)
    prefetch: int | None = None  # jobs claimed ahead of free consumers; None: the driver's default
    isolation: str = "none"  # where jobs that do not say run: "none" (in the worker) or "process"
    #: resource units the worker offers to jobs that ask for them, like (("gpu", 4),)
    resources: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Everything a driver and a worker need to know, validated."""

    driver: str = "memory"
    name: str = "default"
    path: str | None = None
    url: str | None = None
    host: str = "127.0.0.1"
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    max_reclaims: int = 3
    retention: int = 10_000  # completed records kept, newest first
    retention_age_s: float | None = None  # completed records older than this are dropped
    failed_retention: int | None = None  # failed records kept (None: until retried or purged)
    failed_retention_age_s: float | None = None
    prefix: str = "khadem"
    schema: str = "khadem"  # PostgreSQL: the schema that holds the queue's tables
    connect_timeout_s: float = 5.0
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    options: Mapping[str, Any] = field(default_factory=dict)
    ship_code: bool = False  # jobs defined in __main__ (or ship_modules) travel as signed code
    ship_modules: tuple[str, ...] = ()  # local modules shipped by value with them
    #: the shared code-shipping secret: queue.secret, queue.secret_file or $KHADEM_SECRET
    secret: bytes | None = field(default=None, repr=False)
    code_limit: int = CODE_LIMIT
    trust_code: bool = False  # this process's workers run shipped code signed with the secret
    strict_versions: bool = False  # a package version mismatch fails shipped code (else a warning)
    #: bytes of JSON a record holds for a job's arguments, and for its result, at most
    max_payload: int = MAX_PAYLOAD
    #: the artifact store's fsspec URL (None: the driver's default, see artifacts.opening)
    artifacts: str | None = None
    #: options passed to fsspec for the store (an S3 endpoint, keys); never logged
    artifacts_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    inline_limit: int = INLINE_LIMIT
    max_artifact: int = MAX_ARTIFACT
    artifact_grace_s: float = ARTIFACT_GRACE_S
    #: whether opening the queue may upgrade its storage's layout (``None``: the driver's
    #: default: yes for memory, file and SQLite, no for Redis and PostgreSQL; docs/upgrades.md)
    auto_migrate: bool | None = None

    def redacted_url(self) -> str:
        """The queue URL with any password replaced by ``***``, for messages and logs."""
        if self.url:
            return redact_url(self.url)
        if self.driver == "redis":
            return f"redis://{self.host}:{self.port}/{self.db}"
        if self.driver == "sqlite":
            return f"sqlite:///{self.path or ''}"
        return f"{self.driver}://{self.path or ''}"


#: query keys whose values are credentials (libpq's, redis-py's and the usual token names)
SECRET_QUERY_KEYS = re.compile(r"(?i)^(password|passwd|pwd|sslpassword|sslkey|passfile|secret|"
                               r"client_secret|token|access_token|auth|auth_token|api_key|apikey|key)$")


def redact_url(url: str) -> str:
    """``url`` with every credential replaced by ``***``: the password of its user info
    (``user:pw@``, or a bare ``pw@`` as redis URLs allow), and the values of query keys
    such as ``password=``, ``sslpassword=`` and ``token=``; for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            user = f"{user}:***"
        elif parts.scheme.startswith("redis"):  # redis://secret@host: the one word is a password
            user = "***"
        netloc = f"{user}@{hostport}"
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    # replaced in the text as given (geturl would turn "sqlite:///x" into "sqlite:/x")
    redacted = url.replace(f"//{parts.netloc}", f"//{netloc}", 1) if netloc != parts.netloc else url
    return redacted.replace(f"?{parts.query}", f"?{query}", 1) if query != parts.query else redacted


def _redacted_pair(pair: str) -> str:
    key, equals, _ = pair.partition("=")
    return f"{key}=***" if equals and SECRET_QUERY_KEYS.match(unquote(key)) else pair


def parse_config(config: Any = None) -> QueueSettings:
    """Turn any accepted config form into :class:`QueueSettings` (see module docstring)."""
    if config is None:
        return QueueSettings()
    if isinstance(config, QueueSettings):
        return config
    if isinstance(config, str):
        return _from_section({"url": config})
    if isinstance(config, Mapping):
        section = config.get("queue", None) if "queue" in config else None
        extra = set(config) - {"queue"}
        if section is None:
            raise ConfigError(f"config dict needs a 'queue' section, got keys {sorted(config)}")
        if extra:
            raise ConfigError(f"unknown top-level config keys {sorted(extra)}; only 'queue' is read")
        if not isinstance(section, Mapping):
            raise ConfigError(f"config 'queue' must be a mapping, got {type(section).__name__}")
        return _from_section(dict(section))
    if callable(getattr(config, "get", None)):
        return _from_section(_read_dotted(config))
    raise ConfigError(f"cannot read queue config from {type(config).__name__}; "
                      "pass a URL, a dict with a 'queue' section, or an object with get()")


def _read_dotted(config: DottedConfig) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for key in QUEUE_KEYS - {"workers"}:
        value = config.get(f"queue.{key}", None)
        if value is not None:
            section[key] = value
    workers = {k: v for k in WORKER_KEYS if (v := config.get(f"queue.workers.{k}", None)) is not None}
    if workers:
        section["workers"] = workers
    return section


def _from_section(section: dict[str, Any]) -> QueueSettings:
    unknown = set(section) - QUEUE_KEYS
    if unknown:
        raise ConfigError(f"unknown queue config keys {sorted(unknown)}; valid keys: {sorted(QUEUE_KEYS)}")
    values: dict[str, Any] = {}
    if section.get("url"):
        url = _require_str(section, "url")
        values.update(_parse_url(url))
        section = {**_url_query(url), **section}
    values.update(_plain_values(section))
    if "workers" in section:
        values["workers"] = _parse_workers(section["workers"])
    values.update(_shipping_values(section))
    settings = replace(QueueSettings(), **values)
    return _check_consistency(settings, explicit_heartbeat="heartbeat" in section)


def _plain_values(section: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("driver", "name", "path", "host", "username", "password", "prefix", "schema"):
        if section.get(key) is not None:
            values[key] = _require_str(section, key)
    for key in ("port", "db", "max_reclaims", "retention", "failed_retention"):
        if section.get(key) is not None:
            values[key] = limits.count(section[key], f"queue.{key}")
    for key, attr in (("lease", "lease_s"), ("heartbeat", "heartbeat_s"),
                      ("connect_timeout", "connect_timeout_s"), ("retention_age", "retention_age_s"),
                      ("failed_retention_age", "failed_retention_age_s")):
        if section.get(key) is not None:
            values[attr] = limits.seconds(section[key], f"queue.{key}")
    values.update(_artifact_values(section))
    if section.get("options") is not None:
        if not isinstance(section["options"], Mapping):
            raise ConfigError("queue.options must be a mapping of driver-specific settings")
        values["options"] = dict(section["options"])
    return values


def _artifact_values(section: dict[str, Any]) -> dict[str, Any]:
    """The sizes a record holds inline and the artifact store's settings."""
    values: dict[str, Any] = {}
    for key in ("max_payload", "inline_limit", "max_artifact"):
        if section.get(key) is not None:
            values[key] = limits.size(section[key], f"queue.{key}")
    if section.get("artifacts") is not None:
        values["artifacts"] = _require_str(section, "artifacts")
    if section.get("artifacts_options") is not None:
        if not isinstance(section["artifacts_options"], Mapping):
            raise ConfigError("queue.artifacts_options must be a mapping of fsspec options "
                              "(for S3: endpoint_url, key, secret, ...)")
        values["artifacts_options"] = dict(section["artifacts_options"])
    if section.get("artifact_grace") is not None:
        values["artifact_grace_s"] = limits.seconds(section["artifact_grace"], "queue.artifact_grace")
    return values


def _shipping_values(section: dict[str, Any]) -> dict[str, Any]:
    import os

    values: dict[str, Any] = {}
    for key in ("ship_code", "trust_code", "strict_versions", "auto_migrate"):
        if section.get(key) is not None:
            if not isinstance(section[key], bool):
                raise ConfigError(f"queue.{key} must be true or false, got {section[key]!r}")
            values[key] = section[key]
    values["ship_modules"] = limits.ship_modules_of(section.get("ship_modules"))
    if section.get("code_limit") is not None:
        values["code_limit"] = limits.count(section["code_limit"], "queue.code_limit")
    explicit = section.get("secret") is not None or section.get("secret_file") is not None
    secret = _secret(section, os.environ.get(SECRET_ENV))
    if secret is not None:  # one from the environment is checked when shipping or trusting uses it
        values["secret"] = limits.checked_secret(secret, "code shipping") if explicit else secret
    return values


def _secret(section: dict[str, Any], from_env: str | None) -> bytes | None:
    """The secret given in the config (``secret``, or read from ``secret_file``), or in the
    environment; never logged, never in a repr."""
    if section.get("secret") is not None and section.get("secret_file") is not None:
        raise ConfigError("give queue.secret or queue.secret_file, not both")
    if section.get("secret") is not None:
        secret = section["secret"]
        if not isinstance(secret, str | bytes):
            raise ConfigError("queue.secret must be a string")
        return secret.encode() if isinstance(secret, str) else secret
    if section.get("secret_file") is not None:
        path = _require_str(section, "secret_file")
        try:
            with open(path, "rb") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"queue.secret_file {path!r} cannot be read: {exc.strerror}") from None
    return from_env.encode() if from_env else None


def _check_consistency(settings: QueueSettings, *, explicit_heartbeat: bool) -> QueueSettings:
    if not explicit_heartbeat:
        settings = replace(settings, heartbeat_s=settings.lease_s / 3)
    if settings.heartbeat_s >= settings.lease_s:
        raise ConfigError(f"queue.heartbeat ({settings.heartbeat_s:g}s) must be shorter than "
                          f"queue.lease ({settings.lease_s:g}s), or leases expire between beats")
    if settings.driver in ("file", "sqlite") and not settings.path:
        raise ConfigError(f"the {settings.driver} driver needs queue.path or a "
                          f"{settings.driver}:/// URL")
    limits.queue_name(settings.name, "queue.name")
    limits.key_prefix(settings.prefix)
    if settings.driver == "sqlite" and _sqlite_in_memory(settings.path or ""):
        raise ConfigError("sqlite:///:memory: is a database of one connection, which a worker and a "
                          "dispatcher cannot share; use the memory driver (memory:// or no URL) for a "
                          "queue in this process, or a file such as sqlite:///runs.db")
    if settings.ship_code or settings.trust_code:
        why = "queue.ship_code" if settings.ship_code else "queue.trust_code"
        limits.checked_secret(settings.secret, why)
    return settings


def _sqlite_in_memory(path: str) -> bool:
    """Whether SQLite would open ``path`` as a private in-memory database (or, through
    Python's ``sqlite3``, as a file literally named ``:memory:``)."""
    return path == ":memory:" or path.startswith("file::memory:") or "mode=memory" in path


URL_QUERY_KEYS = frozenset({"name", "lease", "heartbeat", "max_reclaims", "retention", "retention_age",
                            "failed_retention", "failed_retention_age", "prefix", "connect_timeout",
                            "schema", "max_payload", "inline_limit", "max_artifact", "auto_migrate"})
URL_FLAGS = {"true": True, "false": False, "1": True, "0": False}  # how a URL says a yes-or-no setting


def _url_query(url: str) -> dict[str, Any]:
    """Queue settings given in the URL's query string, e.g. ``redis://host/0?lease=5&name=gpu``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if URL_SCHEMES.get(parts.scheme) == "postgres":  # the rest are libpq's (sslmode=...)
        query = {k: v for k, v in query.items() if k in URL_QUERY_KEYS}
    unknown = set(query) - URL_QUERY_KEYS
    if unknown:
        raise ConfigError(f"unknown settings {sorted(unknown)} in the query of {redact_url(url)!r}; "
                          f"valid: {sorted(URL_QUERY_KEYS)}")
    return {k: (v if k in ("name", "prefix", "schema", "max_payload", "inline_limit", "max_artifact")
                else _flag(v, k) if k == "auto_migrate" else _number(v, k))
            for k, v in query.items()}


def _flag(text: str, key: str) -> bool:
    if text.lower() not in URL_FLAGS:
        raise ConfigError(f"queue.{key} in a URL query must be true or false, got {text!r}")
    return URL_FLAGS[text.lower()]


def _number(text: str, key: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"queue.{key} in a URL query must be a number, got {text!r}") from None


def _parse_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    driver = URL_SCHEMES.get(parts.scheme)
    if driver is None:
        raise ConfigError(f"unknown queue URL scheme {parts.scheme!r} in {redact_url(url)!r}; "
                          f"valid schemes: {', '.join(sorted(URL_SCHEMES))}")
    values: dict[str, Any] = {"driver": driver, "url": url}
    if driver in ("sqlite", "file"):
        values["path"] = _url_path(parts, url)
    elif driver == "redis":
        values.update(_parse_redis_url(parts, url))
    return values


def _url_path(parts: Any, url: str) -> str:
    """The path a ``sqlite:`` or ``file:`` URL names.

    SQLite follows SQLAlchemy's convention: ``sqlite:///runs.db`` is ``runs.db`` in the working
    directory and ``sqlite:////abs/runs.db`` the absolute ``/abs/runs.db``. A ``file:`` URL is a
    file URI: ``file:///tmp/q`` is ``/tmp/q``.
    """
    path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
    if parts.scheme == "sqlite" and not parts.netloc and path.startswith("/"):
        path = path[1:]
    if not path:
        example = "sqlite:///runs.db (relative) or sqlite:////abs/runs.db" if parts.scheme == "sqlite" \
            else "file:///abs/folder"
        raise ConfigError(f"queue URL {url!r} names no path; write {example}")
    return path


def _parse_redis_url(parts: Any, url: str) -> dict[str, Any]:
    values: dict[str, Any] = {"host": parts.hostname or "127.0.0.1"}
    try:
        values["port"] = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"bad port in queue URL {redact_url(url)!r}: {exc}") from None
    if parts.username:
        values["username"] = unquote(parts.username)
    if parts.password:
        values["password"] = unquote(parts.password)
    db_text = parts.path.lstrip("/")
    if db_text:
        if not db_text.isdigit():
            raise ConfigError(f"redis db in {redact_url(url)!r} must be a number, got {db_text!r}")
        values["db"] = int(db_text)
    return values


def _parse_workers(workers: Any) -> WorkerSettings:
    if not isinstance(workers, Mapping):
        raise ConfigError(f"queue.workers must be a mapping, got {type(workers).__name__}")
    unknown = set(workers) - WORKER_KEYS
    if unknown:
        raise ConfigError(f"unknown queue.workers keys {sorted(unknown)}; valid keys: {sorted(WORKER_KEYS)}")
    return worker_settings(WorkerSettings(), **dict(workers))


def worker_settings(base: WorkerSettings, **overrides: Any) -> WorkerSettings:
    """``base`` with validated overrides (``None`` keeps the base value)."""
    values: dict[str, Any] = {}
    for key in ("max_jobs", "concurrency", "prefetch"):
        if overrides.get(key) is not None:
            values[key] = limits.count(overrides[key], key)
    if overrides.get("delay") is not None:
        values["delay_s"] = limits.seconds(overrides["delay"], "worker delay")
    if overrides.get("burst") is not None:
        values["burst"] = bool(overrides["burst"])
    if overrides.get("timeout") is not None:
        values["timeout_s"] = limits.seconds(overrides["timeout"], "worker timeout", kind="timeout")
    if overrides.get("isolation") is not None:
        values["isolation"] = limits.check_isolation(overrides["isolation"], "worker")
    if overrides.get("resources") is not None:
        values["resources"] = worker_resources(overrides["resources"])
    return replace(base, **values)


def worker_resources(value: Any) -> tuple[tuple[str, int], ...]:
    """What a worker offers: ``{"gpu": 4}`` or ``"gpu=4,mem_gb=64"``, checked."""
    if isinstance(value, str):
        return tuple(limits.parse_resources(value, "resources").items())
    offered = limits.check_resources(value)
    return tuple(offered.items())


def _require_str(section: Mapping[str, Any], key: str) -> str:
    value = section[key]
    if not isinstance(value, str):
        raise ConfigError(f"queue.{key} must be a string, got {value!r}")
    return value


