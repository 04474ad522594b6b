"""The Redis key schema: every key the driver and its scripts use, in one place.

A queue's keys share the hash tag ``{prefix:queue}``, so every script that touches them runs in
one Cluster slot. ``KEY_NAMES`` is the order in which every script receives them as ``KEYS``;
``lua/_common.lua`` names the same positions ``K_SEQ`` ... ``K_CANCELLED`` (a test checks that the
two agree).

=========  ===========  ========================================================================
key        type         holds
=========  ===========  ========================================================================
seq        string       a counter: numbers enqueued jobs (FIFO order) and priority scores
ready      sorted set   ready jobs of priority != 0, scored ``-priority * 1e12 + seq``
delayed    sorted set   scheduled jobs, scored by the ms time they fall due
active     sorted set   claimed jobs, scored by the ms time their lease expires
completed  sorted set   completed jobs, scored by finish time (retention trims it)
failed     sorted set   failed jobs, scored by finish time
all        sorted set   every job, scored by creation order (listings)
state      hash         id -> ``status,attempt,priority,available,started,finished,lease<TAB>data``
token      hash         id -> the token of the claim that holds it (fences every write)
result     hash         id -> the result JSON of a completed job
error      hash         id -> ``[error, traceback]`` JSON of the last failed attempt
reclaims   hash         id -> how often its lease expired
meta       hash         id -> progress, note and captured output JSON
keys       hash         sweep key -> job id (resumable sweeps)
notify     list         wake-ups for idle workers (BLPOP); ``notify:settled`` is the settle channel
sweep      string       the lock that lets one claim at a time reclaim expired leases
waiting    sorted set   workers registered for hand-off, scored by when their wait ends
handoff    list         jobs a dispatch claimed for a waiting worker
line       list         ready jobs of priority 0, FIFO
cancelled  sorted set   cancelled jobs, scored by when they were cancelled
unique     hash         lock key -> ``job id|statuses that hold it (*: any)|expiry ms (-1: none)``
expiring   sorted set   finished jobs with a lifetime of their own, scored by when it ends
lane_of    hash         id -> the lane of a job with limits (``flow``)
lanes      hash         lane -> its rule (JSON, as the last dispatch to it wrote it)
lane_wait  sorted set   lanes with ready jobs, scored by the score of their first one
lane_held  hash         lane -> how many of its jobs are held now
awaiting   sorted set   jobs waiting for others (``dependencies``), scored by creation order
paused     string       present while the queue is paused: no claim and no hand-off takes its jobs
=========  ===========  ========================================================================

Each lane also has two keys of its own under the same hash tag: ``lane_wait:<lane>``, a sorted
set of its ready jobs scored as in ``ready``, and ``lanes:<lane>:starts``, the start times of
its rate window (``lane_keys`` names them). A waiting job has ``awaiting:left:<id>``, the set of
parents it still waits for, and a parent with waiting children ``awaiting:children:<id>``, the
set of them as ``child|on_upstream_failure``. Versions before the keyed store kept a queue's
schedules in two more hashes, ``schedules`` and ``ticks`` (``LEGACY_NAMES``): the driver moves
them into the keyed store the first time it lists schedules.

Keys outside every queue's hash tag: ``{prefix}:queues``, the set of queue names any process
dispatched to (see ``directory``), ``{prefix}:layout``, the layout version (``drivers._layout``),
``{prefix}:code``, a hash of shipped code envelopes by digest (see ``shipping``),
``{prefix}:workers`` (resource offers as versions before the keyed store kept them; only
``purge`` touches it now), and one string ``{prefix}:kv:<key>`` per key of the keyed store
(``QueueDriver.kv_put``), with its own expiry; no script touches them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources

from ...job import JobStatus

KEY_NAMES = ("seq", "ready", "delayed", "active", "completed", "failed", "all", "state", "token",
             "result", "error", "reclaims", "meta", "keys", "notify", "sweep", "waiting", "handoff",
             "line", "cancelled", "unique", "expiring", "lane_of", "lanes", "lane_wait", "lane_held",
             "awaiting", "paused", "rules")
#: position of each key in ``KEY_NAMES`` (and in a script's ``KEYS``, counted from 0)
KEY_INDEX = {name: index for index, name in enumerate(KEY_NAMES)}
#: the Redis type of each key (``TYPE`` answers ``none`` for a key not yet written)
KEY_TYPES = {"seq": "string", "ready": "zset", "delayed": "zset", "active": "zset", "completed": "zset",
             "failed": "zset", "all": "zset", "state": "hash", "token": "hash", "result": "hash",
             "error": "hash", "reclaims": "hash", "meta": "hash", "keys": "hash", "notify": "list",
             "sweep": "string", "waiting": "zset", "handoff": "list", "line": "list",
             "cancelled": "zset", "unique": "hash", "expiring": "zset", "lane_of": "hash", "lanes": "hash",
             "lane_wait": "zset", "lane_held": "hash", "awaiting": "zset", "paused": "string",
             "rules": "hash"}
#: a queue's keys of earlier versions: its schedules by id, and ``slot|job`` of each one's last
#: fired slot
LEGACY_NAMES = ("schedules", "ticks")
#: the hashes that hold one field per job, in the order ``fetch.lua`` returns them
COLUMNS = ("state", "token", "result", "error", "reclaims", "meta")
#: the sorted set that lists the jobs of each status
STATUS_SETS = {JobStatus.WAITING: "awaiting", JobStatus.QUEUED: "ready", JobStatus.SCHEDULED: "delayed",
               JobStatus.ACTIVE: "active", JobStatus.COMPLETED: "completed", JobStatus.FAILED: "failed",
               JobStatus.CANCELLED: "cancelled"}


def hash_tag(prefix: str, queue: str) -> str:
    return f"{{{prefix}:{queue}}}"


def queue_keys(prefix: str, queue: str) -> list[str]:
    """All keys of one queue, in ``KEY_NAMES`` order, sharing the hash tag ``{prefix:queue}``."""
    tag = hash_tag(prefix, queue)
    return [f"{tag}:{name}" for name in KEY_NAMES]


def legacy_keys(prefix: str, queue: str) -> list[str]:
    """The keys ``LEGACY_NAMES`` names, of one queue."""
    tag = hash_tag(prefix, queue)
    return [f"{tag}:{name}" for name in LEGACY_NAMES]


def lane_keys(prefix: str, queue: str, lane: str) -> list[str]:
    """The two keys of one lane of a queue: its ready jobs and its recent starts."""
    tag = hash_tag(prefix, queue)
    return [f"{tag}:lane_wait:{lane}", f"{tag}:lanes:{lane}:starts"]


def item_key_patterns(prefix: str, queue: str) -> list[str]:
    """SCAN patterns of the keys of a queue's lanes and waiting jobs (glob characters escaped)."""
    tag = _glob_escaped(hash_tag(prefix, queue))
    return [f"{tag}:lane_wait:*", f"{tag}:lanes:*", f"{tag}:awaiting:*"]


def _glob_escaped(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def registry_key(prefix: str) -> str:
    """The set of queue names under ``prefix`` (no hash tag: written on its own, never by a
    script, so on Cluster it may live in any slot)."""
    return f"{prefix}:queues"


def settle_channels(prefix: str) -> str:
    """The pattern of every queue's settle channel under ``prefix`` (settle.lua publishes on
    ``{prefix:queue}:notify:settled``), with the prefix's glob characters escaped."""
    return f"{{{_glob_escaped(prefix)}:*}}:notify:settled"


def workers_key(prefix: str) -> str:
    """The hash of resource offers of workers (``resources.Offer``), by worker name, under ``prefix``."""
    return f"{prefix}:workers"


def kv_key(prefix: str, key: str) -> str:
    """The Redis key of one key of the keyed store (a string with its own expiry), under
    ``prefix``; no hash tag, so on Cluster the store spreads over the slots."""
    return f"{prefix}:kv:{key}"


def kv_pattern(prefix: str, key_prefix: str) -> str:
    """The SCAN pattern of the keyed store's keys that start with ``key_prefix``."""
    return _glob_escaped(kv_key(prefix, key_prefix)) + "*"


def layout_key(prefix: str) -> str:
    """The layout version of every queue under ``prefix`` (``drivers._layout``)."""
    return f"{prefix}:layout"


def code_key(prefix: str) -> str:
    """The hash of shipped code envelopes, by digest, of every queue under ``prefix``."""
    return f"{prefix}:code"


def abort_channels(prefix: str, queues: Sequence[str]) -> list[str]:
    """The channels cancel.lua tells the holders of running jobs on: one per queue."""
    return [f"{hash_tag(prefix, queue)}:notify:abort" for queue in queues]


def lua_key_constants() -> dict[str, int]:
    """The ``K_*`` constants ``lua/_common.lua`` declares, as name -> 1-based position."""
    source = (resources.files(__package__) / "lua" / "_common.lua").read_text()
    constants: dict[str, int] = {}
    for names, values in re.findall(r"^local (K_[A-Z_, ]+?) = ([\d, ]+)$", source, re.MULTILINE):
        for name, value in zip(names.split(","), values.split(","), strict=True):
            constants[name.strip()] = int(value)
    return constants
