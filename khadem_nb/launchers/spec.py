"""What every launcher starts: a ``khadem-nb worker`` command line and its environment.

``LaunchSpec`` holds what a launch asks for (the queue's URL, concurrency, modules to import,
resources, a command to run first, the remote Python) and turns it into the worker's arguments
and environment. The secret of a queue that ships code travels in the environment only
(``environment``), never in the arguments, which other users of a machine can read. The
environment also carries the launching process's Python and package versions (``EXPECTED_ENV``),
which the worker compares with its own at start.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import limits
from ..config import SECRET_ENV, QueueSettings
from ..errors import ConfigError, LaunchError
from ..runtime.presence import EXPECTED_ENV, LAUNCHER_ENV, NAME_ENV, expected_environment

START_TIMEOUT_S = 60.0  # a launched worker that has not registered by then is stopped and reported


@dataclass(frozen=True)
class LaunchSpec:
    """One launch's workers: what each runs and with what around it."""

    url: str
    concurrency: int = 1
    imports: tuple[str, ...] = ()
    resources: Mapping[str, int] = field(default_factory=dict)
    trust_code: bool = False
    strict_versions: bool = False
    secret: str | None = None
    artifacts: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # set in the worker's environment
    setup: str | None = None  # a shell command run before the worker (activate a venv, load a module)
    python: str | None = None  # the worker's Python; each launcher has its default
    detach: bool = False  # the worker outlives what launched it
    grace_s: float = 30.0  # what running jobs get when the worker is stopped

    def arguments(self) -> list[str]:
        """The worker's arguments after the Python executable."""
        args = ["-m", "khadem_nb.cli", "--log-level", "INFO", "worker", "--queue-url", self.url,
                "--concurrency", str(self.concurrency), "--grace", f"{self.grace_s:g}"]
        for module in self.imports:
            args += ["--import", module]
        if self.resources:
            args += ["--resources", ",".join(f"{k}={v}" for k, v in self.resources.items())]
        if self.trust_code:
            args.append("--trust-code")
        if self.strict_versions:
            args.append("--strict-versions")
        if self.artifacts:
            args += ["--artifacts", self.artifacts]
        return args

    def environment(self, name: str, launcher: str) -> dict[str, str]:
        """What a launcher adds to the worker's environment: its name, the launcher, the
        expected versions, the variables asked for, and the secret where code is shipped."""
        added = {**self.variables, NAME_ENV: name, LAUNCHER_ENV: launcher,
                 EXPECTED_ENV: json.dumps(expected_environment())}
        if self.trust_code and self.secret is not None:
            added[SECRET_ENV] = self.secret
        return added


def new_name(host: str, launcher: str) -> str:
    return f"{host}-{launcher}-{uuid.uuid4().hex[:8]}"


def queue_url_of(settings: QueueSettings) -> str:
    """The URL a worker process opens the queue with (a memory queue has none: it lives here)."""
    if settings.driver in ("memory", "sync"):
        raise LaunchError(f"a {settings.driver} queue lives in this process only: launch workers of a queue "
                          "other processes reach (sqlite:///runs.db, file://..., redis://..., postgresql://...)")
    if settings.url:
        return settings.url
    if settings.driver in ("sqlite", "file") and settings.path:
        return f"{settings.driver}:///{os.path.abspath(settings.path)}"
    raise LaunchError("launching workers needs the queue given by URL (kn.Queue('redis://...'))")


def spec_for(settings: QueueSettings, *, concurrency: Any = 1, imports: Sequence[str] = (),
             resources: Any = None, env: Mapping[str, str] | str | None = None,
             python: str | None = None, detach: bool = False, grace: Any = 30.0) -> LaunchSpec:
    """The launch of workers of the queue of ``settings``, every option checked. ``env``: a
    mapping of environment variables, or a shell command the worker runs after (``source
    venv/bin/activate``, ``module load cuda``)."""
    concurrency = limits.count(concurrency, "concurrency")
    if isinstance(imports, str) or not all(isinstance(m, str) and m for m in imports):
        raise ConfigError(f"imports must be a list of module names, got {imports!r}")
    if python is not None and (not isinstance(python, str) or not python.strip()):
        raise ConfigError(f"python must be the path or name of a Python executable, got {python!r}")
    variables, setup = _env_option(env)
    offered = {} if resources is None else (limits.parse_resources(resources, "resources")
                                            if isinstance(resources, str)
                                            else limits.check_resources(resources, "resources"))
    secret = settings.secret.decode() if settings.ship_code and settings.secret is not None else None
    return LaunchSpec(url=queue_url_of(settings), concurrency=concurrency, imports=tuple(imports),
                      resources=offered, trust_code=settings.ship_code,
                      strict_versions=settings.strict_versions, secret=secret, artifacts=settings.artifacts,
                      variables=variables, setup=setup, python=python, detach=bool(detach),
                      grace_s=limits.seconds(grace, "grace", kind="grace"))


def _env_option(env: Mapping[str, str] | str | None) -> tuple[dict[str, str], str | None]:
    if env is None:
        return {}, None
    if isinstance(env, str):
        if not env.strip():
            raise ConfigError("env as a command must not be empty (or give a mapping of variables)")
        return {}, env
    if isinstance(env, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return dict(env), None
    raise ConfigError(f"env is a mapping of environment variables (str to str) or a shell command to run "
                      f"first, got {env!r}")
