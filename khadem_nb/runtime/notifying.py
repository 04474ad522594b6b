"""Notifications: a message when a group of jobs ends or fails, a study ends, or a queue's
backlog or failure rate crosses a threshold, through apprise (email, Slack, ntfy, webhooks and
a hundred more services, each named by a URL such as ``ntfy://topic`` or ``json://host:port``).

Every event is sent once, by whichever process sees it first: the sender first writes the
event's key in the queue's keyed store (``notified/<event>``, kept 30 days) with
``kv_put_new``, and only the process whose write lands sends. A message that cannot be
delivered is tried again after 1, 2 and 4 seconds, then logged once; the jobs are never
affected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..drivers.base import QueueDriver
from ..errors import ConfigError

logger = logging.getLogger(__name__)

NOTIFIED_KEY = "notified/"  # the keyed store's prefix of events already sent
EVENT_TTL_S = 30 * 86_400.0  # an event's key outlives any run that could send it again
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # waits before the tries after the first
GROUP_EVENTS = ("done", "failed")


def apprise_of(urls: str | Sequence[str]) -> Any:
    """An ``apprise.Apprise`` sending to ``urls``; a ``ConfigError`` naming a URL whose scheme
    apprise does not know (or apprise missing, with the extra that brings it)."""
    targets = [urls] if isinstance(urls, str) else list(urls) if isinstance(urls, Sequence) else []
    if not targets or not all(isinstance(u, str) and u for u in targets):
        raise ConfigError(f"notify needs one or more apprise URLs (like 'ntfy://topic'), got {urls!r}")
    # apprise loads a service's module as a URL names it, and one of them imports the standard
    # library's deprecated imghdr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import apprise
        except ImportError:
            raise ConfigError('notifications need apprise: pip install "khadem_nb[notify]"') from None
        sender = apprise.Apprise()
        for url in targets:
            if not sender.add(url):
                scheme = url.partition("://")[0] if "://" in url else url
                raise ConfigError(f"apprise cannot send to {url!r}: unknown or malformed service {scheme!r} "
                                  "(see https://github.com/caronc/apprise/wiki for the URL of each service)")
    return sender


def check_events(on: Any, valid: Sequence[str]) -> tuple[str, ...]:
    events = (on,) if isinstance(on, str) else tuple(on) if isinstance(on, Iterable) else (on,)
    unknown = [e for e in events if e not in valid]
    if not events or unknown:
        raise ConfigError(f"notify on= takes events of {', '.join(valid)}; got {on!r}")
    return events


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str
    kind: str = "info"  # apprise's notify type: info, success, warning, failure


async def send_once(driver: QueueDriver, sender: Any, event: str, message: Message) -> bool:
    """Send ``message`` unless some process sent ``event`` already; whether this one sent it."""
    key = f"{NOTIFIED_KEY}{hashlib.sha256(event.encode()).hexdigest()[:32]}"
    if not await driver.kv_put_new(key, event.encode()[:200], ttl_s=EVENT_TTL_S):
        return False
    for wait in (0.0, *RETRY_DELAYS_S):
        await asyncio.sleep(wait)
        try:
            if await sender.async_notify(body=message.body, title=message.title, notify_type=message.kind):
                return True
        except Exception:  # a service's own failure: tried again, then logged
            logger.debug("notification %r raised", event, exc_info=True)
    logger.warning("notification %r could not be delivered after %d tries; the jobs are not affected",
                   message.title, 1 + len(RETRY_DELAYS_S))
    return False


def group_key(ids: Sequence[str]) -> str:
    """One name for a group of jobs, the same in every process that holds it."""
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:24]
