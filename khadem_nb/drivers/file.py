"""File driver: one JSON file per job, in one folder per state.

Layout under ``queue.path``::

    tmp/                       files being written (cleaned at start)
    ready/<queue>/<order>.json     due jobs; <order> sorts by priority, then dispatch time
    limited/<queue>/<order>.json   due jobs with limits (``flow``), claimed as their lanes allow
    starts/<queue>.json            recent start times of each rated lane
    workers/<sha256>.json          a worker's resource offer (``resources.Offer``)
    schedules/<sha256>.json        a schedule, its last fired slot and that slot's job
    delayed/<queue>/<due>.json     jobs waiting for their time
    waiting/<order>.json           jobs waiting for the jobs they run after (``dependencies``)
    edges/<parent>/<child>         an empty file per child still waiting for that parent
    left/<child>/<parent>          an empty file per parent that child still waits for
    active/<order>.json            claimed jobs (carry token and lease)
    done/  failed/  cancelled/     finished jobs (a job cancelled while running keeps its token
                                   in cancelled/ until its holder stops it)
    corrupt/                       files that could not be parsed
    code/<digest>.env              shipped code envelopes
    .lock                          the only file ever flock()ed

Every write goes to ``tmp/`` first, is fsynced, moved into place with ``os.replace`` and the
folder fsynced, so a crash at any instant leaves either the old or the new file, never a
partial one. State changes (claim, settle, heartbeat, reclaim) hold an exclusive ``flock`` on
``.lock``, which serialises processes; the claim itself is an atomic rename out of ``ready/``.
A file that cannot be parsed is moved to ``corrupt/`` with a warning and never stops a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from .. import limits
from .._time import now_ms
from ..config import QueueSettings
from ..errors import CorruptQueueError, DriverError, SerializationError
from ..features.capabilities import Runs
from ..features.dependencies import ended_reason, judge, place_child, stop_child, stops_child
from ..features.flow import ClaimPlan, LaneRule, LaneUse, kind_of_lane, recent_starts, take_in_turns
from ..features.unique import Lock, lock_is_live
from ..job import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    SCHEDULED,
    TERMINAL_STATUSES,
    WAITING,
    JobRecord,
    JobStatus,
)
from . import _records
from ._fs import FILE_MODE, FOLDER_MODE, check_parent_writable, local_path
from ._kv import check_key, check_prefix, expiry
from ._lanes import (
    SERVED_TTL_S,
    StoredRules,
    lane_order,
    new_turns,
    oldest_start_kept,
    rules_prefix,
    served_keys,
    served_of,
)
from ._layout import USE, Layout, plan
from ._polling import PollingWaits
from ._records import due_view, reclaim
from .base import (
    CODE_DIGEST,
    FIRED_KEY,
    PAUSED_PREFIX,
    RELEASE,
    RETRY,
    SCHEDULES_KEY,
    QueueDriver,
    Settlement,
    claim,
    empty_counts,
    retention_cutoffs,
    retention_pass_interval,
)
from .quarantine import checked, unreadable

logger = logging.getLogger(__name__)
T = TypeVar("T")

STATE_DIRS = ("tmp", "ready", "delayed", "active", "done", "failed", "cancelled", "corrupt", "code",
              "unique", "expiring", "limited", "starts", "workers", "waiting", "edges", "left", "kv")
#: the status of a job by the folder its file is in (``ready/`` and the rest hold per-queue folders)
FOLDER_STATUS = {"waiting": WAITING, "active": ACTIVE, "done": COMPLETED, "failed": FAILED,
                 "cancelled": CANCELLED}
QUEUE_FOLDER_STATUS = {"ready": QUEUED, "limited": QUEUED, "delayed": SCHEDULED}
PRIORITY_OFFSET = 10**9  # ready files sort ascending; higher priority must come first
ID_LEN = 32
JOB_FILE = re.compile(r"\d{10}-\d{15}-\d{12}-[0-9a-f]{32}\.json\Z")  # all but delayed/
JOB_ID = re.compile(r"-([0-9a-f]{32})\.json\Z")
DELAYED_FILE = re.compile(r"\d{15}-[0-9a-f]{32}\.json\Z")
TMP_MAX_AGE_S = 600.0  # a temporary file this old was left by a writer that died
READY_CACHE_S = 0.25
DUE_CACHE_S = 1.0  # longest a claim trusts its last look at delayed/<queue> (see _promote_due)
LAYOUT_FILE = "layout"  # the queue folder's layout version (``_layout``), a number in a file
#: the folder's layout versions: 1 is the first that stores its version; a folder written
#: before (0) has its shipped code and schedules moved into the keyed store
LAYOUT = Layout(1, 1)
KINDS_KEPT = 10_000  # ready files whose job kind a filtered claim keeps before pruning


def _ready_name(record: JobRecord) -> str:
    prefix = f"{PRIORITY_OFFSET - record.priority:010d}-{record.created_ms:015d}"
    return f"{prefix}-{_order(record)}-{record.id}.json"


def _order(record: JobRecord) -> str:
    return f"{record.meta.get('_seq', 0):012d}"


def _delayed_name(record: JobRecord) -> str:
    return f"{record.available_ms:015d}-{record.id}.json"


def _due_of(delayed_name: str) -> int:
    return int(delayed_name.split("-", 1)[0])


def _id_of(filename: str) -> str:
    return filename[-(ID_LEN + 5) : -5]


class FileStore:
    """The synchronous half: paths, atomic writes and the lock."""

    def __init__(self, root: str, settings: QueueSettings, auto_migrate: bool = True) -> None:
        self.root = root
        self.settings = settings
        self.auto_migrate = auto_migrate
        self.layout_change: tuple[int | None, int] | None = None  # what opening did (``_layout``)
        self._seq = 0
        self._thread_lock = threading.Lock()
        self._next_sweep_ms = 0
        # Sorted listing of ready/<queue>, reused between claims: listing and sorting a folder
        # of N files per claim would make a drain O(N^2). Refreshed when used up, when this
        # process adds work, or after READY_CACHE_S (other processes' new jobs, priorities).
        self._ready_cache: dict[str, tuple[float, list[str]]] = {}
        # What the last look at delayed/<queue> found: when (monotonic), the folder's mtime then,
        # and the earliest due time in it (None: empty). A claim looks again only when that job
        # is due, the folder changed, this process delayed a job, or after DUE_CACHE_S, so a
        # folder of many delayed jobs is not listed and sorted on every claim.
        self._due_cache: dict[str, tuple[float, int, int | None]] = {}
        #: ready file name -> its job's name and code, read by claims filtered by ``Runs``
        self._kinds: dict[str, tuple[str, str | None]] = {}
        self._next_age_pass = 0.0  # monotonic time of the next retention pass by age
        self._lanes: dict[str, tuple[str, str] | None] = {}  # job id -> (lane, rule) of jobs read
        self.rules = StoredRules()  # the kinds' stored rules, as claims last read them

    # -- paths and primitives ----------------------------------------------------------------
    def dir(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def open(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise DriverError(f"queue path {self.root!r} is a file; the file driver needs a folder")
        found = self._stored_layout()
        action = plan(found, LAYOUT, self.auto_migrate, self.root)
        check_parent_writable(os.path.join(self.root, "x"), kind="queue folder", mode=FOLDER_MODE)
        os.makedirs(self.root, mode=FOLDER_MODE, exist_ok=True)
        for name in STATE_DIRS:
            os.makedirs(self.dir(name), mode=FOLDER_MODE, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise DriverError(f"queue folder {self.root!r} is not writable")
        self._remove_stale_temporaries()
        self._finish_cancels()
        if action != USE:  # what a folder written before layout versions held moves (idempotent steps)
            self._move_legacy_code()
            self._move_legacy_schedules()
            self.write_bytes(self.dir(LAYOUT_FILE), f"{LAYOUT.current}\n".encode())
            self.layout_change = (found, LAYOUT.current)

    def _stored_layout(self) -> int | None:
        """The folder's layout version (its LAYOUT_FILE; 0 for a queue folder written before
        versions were stored); ``None`` where it holds no queue yet."""
        try:
            with open(self.dir(LAYOUT_FILE), "rb") as handle:
                text = handle.read().strip()
        except OSError:  # none there (or no folder: open says why)
            held = os.path.isdir(self.root) and any(os.path.isdir(self.dir(name)) for name in STATE_DIRS)
            return 0 if held else None
        try:
            return int(text)
        except ValueError:
            raise CorruptQueueError(f"the layout file of the file queue {self.root!r} holds "
                                    f"{text[:40]!r}, not a version number") from None

    def _move_legacy_code(self) -> None:
        """Move shipped code that versions before the keyed store kept as ``code/<digest>.env``
        into the keyed store, once: a moved file is removed."""
        for entry in self._entries("code"):
            key = "code/" + entry.name.removesuffix(".env")
            if entry.name.endswith(".env") and CODE_DIGEST.match(key[5:]):
                if self.kv_get(key) is None:
                    with open(entry.path, "rb") as handle:
                        self.kv_write(key, handle.read(), None)
                os.unlink(entry.path)

    def _move_legacy_schedules(self) -> None:
        """Move schedules that versions before the keyed store kept as ``schedules/<digest>.json``
        (the spec, the last fired slot and its job) into the keyed store, once: a moved file is
        removed, one that does not read is set aside."""
        for entry in self._entries("schedules"):
            try:
                with open(entry.path, "rb") as handle:
                    told = json.loads(handle.read())
                schedule_id = str(json.loads(told["spec"])["id"])
                if self.kv_get(f"{SCHEDULES_KEY}{schedule_id}") is None:
                    self.kv_write(f"{SCHEDULES_KEY}{schedule_id}", str(told["spec"]).encode(), None)
                    if told.get("last_slot") is not None:
                        fired = {"slot": told["last_slot"], "job": told.get("last_job")}
                        self.kv_write(f"{FIRED_KEY}{schedule_id}", json.dumps(fired).encode(), None)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                self._set_aside(entry.path, f"not a schedule ({exc!r})")
                continue
            os.unlink(entry.path)

    def _finish_cancels(self) -> None:
        """Complete cancels cut short between their rename into ``cancelled/`` and the rewrite."""
        for name in self.listdir("cancelled"):
            record = self.read(self.dir("cancelled", name))
            if record is not None and record.status is not JobStatus.CANCELLED:
                _records.cancel(record, _mtime_ms(self.dir("cancelled", name)), "cancelled")
                self.write(self.dir("cancelled", name), record)

    def _remove_stale_temporaries(self) -> None:
        """Remove what writers that died left in ``tmp/``: a file whose writer (the process id
        its name starts with) no longer runs, or one older than TMP_MAX_AGE_S. A process opening
        the queue never removes a file that another process is still writing."""
        cutoff = time.time() - TMP_MAX_AGE_S
        for entry in self._entries("tmp"):
            with contextlib.suppress(FileNotFoundError):
                if not _writer_runs(entry.name) or entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        lock_fd = os.open(self.dir(".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
        with self._thread_lock, open(lock_fd, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def write_bytes(self, path: str, data: bytes, *, sync_dir: bool = True) -> None:
        """Atomically place ``data`` at ``path`` (temp file, fsync, replace, fsync dir)."""
        tmp = self.dir("tmp", f"{os.getpid()}-{threading.get_ident()}-{os.path.basename(path)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            _fsync_dir(os.path.dirname(path))

    def write(self, path: str, record: JobRecord, *, sync_dir: bool = True) -> None:
        """Atomically (re)place ``path`` with ``record``: temp file, fsync, replace, fsync dir.

        ``sync_dir=False`` skips the folder fsync where losing the rename in a power cut is
        harmless (a claim: the job reappears in ``ready/`` and runs again, as at-least-once
        allows)."""
        self.write_bytes(path, record.to_wire().encode("utf-8"), sync_dir=sync_dir)

    def read(self, path: str) -> JobRecord | None:
        """Parse a job file; an unparsable one is moved to ``corrupt/`` and ``None`` returned."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            return checked(JobRecord.from_wire(data))
        except SerializationError as exc:
            self._set_aside(path, f"unreadable ({exc})")
            return None

    def listdir(self, *parts: str) -> list[str]:
        """The job files of a state folder (``ready/<queue>``, ``active``, ...), sorted. Anything
        else found there (a stray file, a folder) is moved to ``corrupt/`` with a warning, so
        nobody trips over it again."""
        pattern = DELAYED_FILE if parts[0] in ("delayed", "expiring") else JOB_FILE
        names = []
        for entry in self._entries(*parts):
            if entry.is_file(follow_symlinks=False) and pattern.match(entry.name):
                names.append(entry.name)
            else:
                self._set_aside(entry.path, f"not a job file of {'/'.join(parts)}/")
        return sorted(names)

    def queue_dirs(self, folder: str) -> list[str]:
        """The queue folders under ``ready/`` or ``delayed/``; anything else is set aside."""
        names = []
        for entry in self._entries(folder):
            if entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
            else:
                self._set_aside(entry.path, f"not a queue folder of {folder}/")
        return sorted(names)

    def _entries(self, *parts: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.dir(*parts)) as entries:
                return list(entries)
        except FileNotFoundError:
            return []

    def _set_aside(self, path: str, reason: str) -> None:
        target = self.dir("corrupt", f"{int(time.time() * 1000)}-{os.path.basename(path)}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
            logger.warning("%s is %s: moved to %s", path, reason, target)

    # -- operations --------------------------------------------------------------------------
    def insert(self, records: Sequence[JobRecord]) -> None:
        """Store new records; those with parents under the lock their parents' ends take."""
        _check_queues({r.queue for r in records})
        if any(r.parents for r in records):
            with self.locked():
                self._insert(records)
        else:
            self._insert(records)

    def _insert(self, records: Sequence[JobRecord]) -> None:
        statuses = self._status_map() if any(r.parents for r in records) else {}
        for record in records:
            self._seq += 1
            record.meta.setdefault("_seq", self._seq)
            if record.parents:
                self._insert_child(record, statuses)
            else:
                self._place_pending(record)

    # -- jobs that wait for others -----------------------------------------------------------
    def _status_map(self) -> dict[str, JobStatus]:
        """Every stored job's status by id, from the folders its file is in (none is read)."""
        found: dict[str, JobStatus] = {}
        for folder, status in QUEUE_FOLDER_STATUS.items():
            for queue in self.queue_dirs(folder):
                found.update(dict.fromkeys(map(_id_of, self.listdir(folder, queue)), status))
        for folder, status in FOLDER_STATUS.items():
            found.update(dict.fromkeys(map(_id_of, self.listdir(folder)), status))
        return found

    def _insert_child(self, record: JobRecord, statuses: Mapping[str, JobStatus]) -> None:
        """Judge a child against its parents and store it waiting (its marks first), queued,
        or cancelled by a parent that ended it."""
        left = place_child(record, statuses, now_ms())
        if record.status is CANCELLED:
            self.write(self.dir("cancelled", _ready_name(record)), record)
        elif left:
            for parent in left:
                _mark(self.dir("edges", parent), record.id)
                _mark(self.dir("left", record.id), parent)
            self.write(self.dir("waiting", _ready_name(record)), record)
        else:
            self._place_pending(record)

    def _upstream_ended(self, parent: str, status: JobStatus) -> None:
        """Under the lock: tell the children of a job that just ended (and, through a child it
        cancels, that child's children): each is released, cancelled, or waits on."""
        ended = [(parent, status)]
        while ended:
            job_id, job_status = ended.pop()
            children = [e.name for e in self._entries("edges", job_id)]
            if not children:
                continue
            waiting = {_id_of(name): name for name in self.listdir("waiting")}
            for child_id in children:
                name = waiting.get(child_id)
                if name is None:
                    _unmark(self.dir("left", child_id))
                    continue
                # a child's file (it lists every parent) is read only when the child changes
                if job_status is not COMPLETED:
                    child = self.read(self.dir("waiting", name))
                    if child is not None and stops_child(child, job_status):
                        self._end_waiting(name, child, ended_reason(job_id, job_status))
                        ended.append((child_id, CANCELLED))
                        continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir("left", child_id, job_id))
                if not self._entries("left", child_id):
                    child = self.read(self.dir("waiting", name))
                    if child is not None:
                        self._release(name, child)
            _unmark(self.dir("edges", job_id))

    def _end_waiting(self, name: str, child: JobRecord, reason: str) -> None:
        stop_child(child, reason, now_ms())
        self.write(self.dir("cancelled", name), child)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir("waiting", name))
        _unmark(self.dir("left", child.id))

    def _release(self, name: str, child: JobRecord) -> None:
        self._place_pending(child)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir("waiting", name))
        _unmark(self.dir("left", child.id))

    def _rejudge_waiting(self) -> None:
        """Under the lock: judge every waiting job against its parents again, which finishes
        what a process that died midway through a parent's end left undone, and ends a job
        whose parent's file is gone."""
        names = self.listdir("waiting")
        if not names:
            return
        statuses = self._status_map()
        for name in names:
            child = self.read(self.dir("waiting", name))
            if child is None:
                continue
            judgement = judge(child, statuses)
            if judgement.stopper is not None:
                self._end_waiting(name, child, judgement.reason)
                self._upstream_ended(child.id, CANCELLED)
            elif not judgement.left:
                self._release(name, child)

    def insert_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        """Under the store lock: insert ``record`` and write ``lock``'s file
        (``unique/<digest of the key>.json``) unless a live lock holds the key (its job's id
        then)."""
        _check_queues((record.queue,))
        path = self.dir("unique", hashlib.sha256(lock.key.encode()).hexdigest() + ".json")
        with self.locked():
            held = self._read_lock(path)
            if held is not None:
                holder = self.find(str(held.get("job_id")))
                status = None if holder is None else holder.status
                if lock_is_live(str(held.get("holds")), status, held.get("expires_ms"), now_ms()):
                    return str(held["job_id"])
            fields = {"key": lock.key, "job_id": record.id, "holds": lock.holds_text,
                      "expires_ms": lock.expires_ms}  # the lock is taken before the job is stored
            self.write_bytes(path, json.dumps(fields).encode())
            self._insert([record])
        return None

    def _read_lock(self, path: str) -> dict[str, Any] | None:
        """A lock file's fields; one that cannot be read is set aside (and the lock is free)."""
        try:
            with open(path, "rb") as handle:
                lock = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            self._set_aside(path, f"not a unique lock ({exc})")
            return None
        return lock if isinstance(lock, dict) else None

    def _place_pending(self, record: JobRecord) -> None:
        if record.available_ms > now_ms():
            record.status = JobStatus.SCHEDULED
            folder = self.dir("delayed", record.queue)
            name = _delayed_name(record)
        else:
            record.status = JobStatus.QUEUED
            folder = self.dir("ready" if record.lane is None else "limited", record.queue)
            name = _ready_name(record)
        os.makedirs(folder, mode=FOLDER_MODE, exist_ok=True)
        self.write(os.path.join(folder, name), record)
        self._ready_cache.pop(record.queue, None)
        self._due_cache.pop(record.queue, None)

    def claim(self, queues: Sequence[str], limit: int, free: Mapping[str, int] | None = None,
              runs: Runs | None = None) -> list[JobRecord]:
        _check_queues(queues)
        with self.locked():
            now = now_ms()
            if now >= self._next_sweep_ms:
                self._reclaim_expired(now)
                self._rejudge_waiting()
                self._next_sweep_ms = now + int(self.settings.lease_s * 250)
            claimed: list[JobRecord] = []
            for queue in queues:
                if self.kv_get(f"{PAUSED_PREFIX}{queue}") is not None:
                    continue
                if self._promote_due(queue, now):
                    self._ready_cache.pop(queue, None)
                if self.listdir("limited", queue):
                    claimed += self._claim_limited(queue, now, free, limit - len(claimed), runs)
                names = self._ready_names(queue)
                while names and len(claimed) < limit:
                    name = names.pop(0)
                    if runs is not None and not self._runnable("ready", queue, name, runs):
                        continue
                    record = self._claim_file(queue, name, now)
                    if record is not None:
                        claimed.append(record)
                if len(claimed) >= limit:
                    break
            return claimed

    def _ready_names(self, queue: str) -> list[str]:
        cached = self._ready_cache.get(queue)
        if cached is None or not cached[1] or time.monotonic() - cached[0] > READY_CACHE_S:
            cached = (time.monotonic(), self.listdir("ready", queue))
            self._ready_cache[queue] = cached
        return cached[1]

    def _runnable(self, folder: str, queue: str, name: str, runs: Runs) -> bool:
        """Whether ``runs`` allows the job of a ready file: its job name and code are read once
        per file (kept in ``_kinds``, pruned to the files still there); a file that does not
        read is claimed, to be quarantined as any claim would."""
        kind = self._kinds.get(name)
        if kind is None:
            record = self.read(self.dir(folder, queue, name))
            if record is None:
                return True
            if len(self._kinds) >= KINDS_KEPT:
                present = set(self.listdir("ready", queue)) | set(self.listdir("limited", queue))
                self._kinds = {n: k for n, k in self._kinds.items() if n in present}
            kind = self._kinds[name] = (record.name, record.code)
        return runs.allows(*kind)

    def _claim_limited(self, queue: str, now: int, free: Mapping[str, int] | None,
                       want: int, runs: Runs | None = None) -> list[JobRecord]:
        """The queue's limited jobs its lanes allow now, in claim order, fair lanes a job a
        turn (``flow.claim_turns``)."""
        active, waiting = self.listdir("active"), self.listdir("limited", queue)
        self._lanes = {i: self._lanes[i] for i in map(_id_of, active + waiting) if i in self._lanes}
        files, own = self._waiting_lanes(queue, waiting)
        order = lane_order(own.items(), self._rules(queue, own))
        keys = served_keys(queue, order)
        served = served_of(keys, ((key, value) for key in keys if (value := self.kv_get(key)) is not None))
        held = self._held_by_lane(active)
        starts_path = self.dir("starts", f"{queue}.json")
        starts = self._read_starts(starts_path, now)
        plan = ClaimPlan(now, held, lambda lane, _: starts.get(lane, []), free)
        claimed: list[JobRecord] = []
        started = False  # a job of a rated lane was claimed: the window's log changed

        def take(lane: str, rule: LaneRule, n: int) -> int:
            nonlocal started
            got, names = 0, files[lane]
            while names and got < n:
                if runs is not None and not self._runnable("limited", queue, names[0], runs):
                    names.pop(0)
                    continue
                if not plan.admit(lane, rule):
                    break
                record = self._claim_file(queue, names.pop(0), now, "limited")
                if record is not None:
                    claimed.append(record)
                    got += 1
                    if rule.rate is not None:
                        starts.setdefault(lane, []).append(now)
                        started = True
            return got

        turns = take_in_turns(order, want, take, served)
        for key, value in new_turns(queue, turns, served):
            self.kv_write(key, value, expiry(now, SERVED_TTL_S))
        if started:
            self.write_bytes(starts_path, json.dumps(starts).encode(), sync_dir=False)
        return claimed

    def _waiting_lanes(self, queue: str,
                       waiting: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The lanes of the ``waiting`` files: each lane's files in claim order, and the rule
        its first file carries."""
        files: dict[str, list[str]] = {}
        own: dict[str, str] = {}
        for name in waiting:
            lane = self._lane_of("limited", queue, name)
            if lane is not None:
                files.setdefault(lane[0], []).append(name)
                own.setdefault(lane[0], lane[1])
        return files, own

    def _rules(self, queue: str, lanes: Iterable[str]) -> dict[str, str]:
        """The rules stored for the job kinds of ``lanes``: name -> rule text (read again after
        ``_lanes.RULES_FRESH_S``)."""
        found = self.rules.fresh(queue) or {}
        missing = {name for lane in lanes if (name := kind_of_lane(lane)) is not None} - set(found)
        if missing or not found:  # a kind without a stored rule is kept as "", which reads as none
            keys = [f"{rules_prefix(queue)}{name}" for name in missing]
            found = self.rules.keep(queue, {key: self.kv_get(key) or b"" for key in keys}, found)
        return found

    def _held_by_lane(self, active: Iterable[str]) -> dict[str, int]:
        """Jobs held per lane among the files of ``active/``: a job counts until it is settled,
        cancelled, or reclaimed by the lease sweep."""
        held: dict[str, int] = {}
        for name in active:
            lane = self._lane_of("active", name)
            if lane is not None:
                held[lane[0]] = held.get(lane[0], 0) + 1
        return held

    def _lane_of(self, *parts: str) -> tuple[str, str] | None:
        """(lane, rule) of the job file at ``parts``; ``None`` for a job without limits or a
        file gone. A job's lane never changes, so each file is read once."""
        job_id = _id_of(parts[-1])
        if job_id not in self._lanes:
            record = self.read(self.dir(*parts))
            if record is None:
                return None
            self._lanes[job_id] = None if record.lane is None else (record.lane, record.lane_rule or "")
        return self._lanes[job_id]

    def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        _check_queues((queue,))
        held = self._held_by_lane(self.listdir("active"))
        now = now_ms()
        starts = self._read_starts(self.dir("starts", f"{queue}.json"), now)
        return {lane: LaneUse(held.get(lane, 0), recent_starts(starts.get(lane, []), rule, now))
                for lane, rule in lanes.items()}

    def _read_starts(self, path: str, now: int) -> dict[str, list[int]]:
        """Each rated lane's starts within the longest window; ``{}`` if the file is unreadable."""
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
            return {str(lane): [int(t) for t in times if int(t) > oldest_start_kept(now)]
                    for lane, times in data.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _claim_file(self, queue: str, name: str, now: int, folder: str = "ready") -> JobRecord | None:
        active = self.dir("active", name)
        try:
            os.rename(self.dir(folder, queue, name), active)
        except FileNotFoundError:
            return None
        record = self.read(active)
        if record is None:
            return None
        claim(record, now, self.settings.lease_s)
        self.write(active, record, sync_dir=False)
        return record

    def _promote_due(self, queue: str, now: int) -> bool:
        """Move the delayed jobs of ``queue`` that are due into ``ready/`` (or ``limited/``);
        whether any moved."""
        folder = self.dir("delayed", queue)
        try:
            changed = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            return False
        seen = self._due_cache.get(queue)
        if seen is not None and seen[1] == changed and time.monotonic() - seen[0] < DUE_CACHE_S \
                and (seen[2] is None or seen[2] > now):
            return False
        promoted = False
        names = self.listdir("delayed", queue)
        self._due_cache[queue] = (time.monotonic(), changed, _due_of(names[0]) if names else None)
        for name in names:
            if _due_of(name) > now:
                break
            path = self.dir("delayed", queue, name)
            record = self.read(path)
            if record is None:
                continue
            record.status = JobStatus.QUEUED
            folder = "ready" if record.lane is None else "limited"
            os.makedirs(self.dir(folder, queue), mode=FOLDER_MODE, exist_ok=True)
            self.write(self.dir(folder, queue, _ready_name(record)), record)
            promoted = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return promoted

    def _reclaim_expired(self, now: int) -> None:
        finished = set(map(_id_of, self.listdir("done"))) | set(map(_id_of, self.listdir("failed")))
        for name in self.listdir("active"):
            path = self.dir("active", name)
            if _id_of(name) in finished:  # crashed between writing the result and the unlink
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            record = self.read(path)
            if record is None:
                continue
            expiry = record.lease_ms if record.lease_ms is not None else _mtime_ms(path) + int(
                self.settings.lease_s * 1000)
            if expiry >= now:
                continue
            reclaim(record, now, self.settings.max_reclaims)
            logger.warning("job %s (%s): lease expired, %s", record.name, record.id, record.status)
            self._move_from_active(path, record)

    def _move_from_active(self, path: str, record: JobRecord) -> None:
        if record.status is JobStatus.COMPLETED:
            self.write(self.dir("done", os.path.basename(path)), record)
        elif record.status is JobStatus.FAILED:
            self.write(self.dir("failed", os.path.basename(path)), record)
        else:
            self._place_pending(record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # if a crash undoes this unlink, the sweep drops the stale copy
        if record.status in TERMINAL_STATUSES:
            self._upstream_ended(record.id, record.status)

    def _find_active(self, job_id: str) -> str | None:
        for name in self.listdir("active"):
            if _id_of(name) == job_id:
                return self.dir("active", name)
        return None

    def settle(self, held: JobRecord, settlement: Settlement) -> str | None:
        """Write ``settlement`` if the job is still active under ``held``'s token (``"settled"``),
        or stop it if it was cancelled while held under that token (``"stopped"``)."""
        with self.locked():
            path = self._find_active(held.id)
            stored = None if path is None else self.read(path)
            if path is None or stored is None or stored.token != held.token:
                return self._stop(held, settlement)
            record = held.copy()
            settlement.apply(record)
            self._move_from_active(path, record)
            if record.keep_ms is not None and record.status in TERMINAL_STATUSES:
                expires = (record.finished_ms or 0) + record.keep_ms
                self.write_bytes(self.dir("expiring", f"{expires:015d}-{record.id}.json"), b"")
            if record.status is JobStatus.COMPLETED:
                self._trim_to_count("done", self.settings.retention)
            elif record.status is JobStatus.FAILED and self.settings.failed_retention is not None:
                self._trim_to_count("failed", self.settings.failed_retention)
            if record.status in TERMINAL_STATUSES and time.monotonic() >= self._next_age_pass:
                self._trim_by_age()
                self._trim_expired()
                self._drop_dead_locks()
                self._drop_expired_values()
            return "settled"

    def _stop(self, held: JobRecord, settlement: Settlement) -> str | None:
        name = next((n for n in self.listdir("cancelled") if _id_of(n) == held.id), None)
        path = None if name is None else self.dir("cancelled", name)
        stored = None if path is None else self.read(path)
        if path is None or stored is None or stored.token is None or stored.token != held.token:
            return None
        stored.meta.update(held.meta)
        settlement.stop(stored)
        self.write(path, stored)
        return "stopped"

    def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        """Move what is pending or running among ``job_ids`` to ``cancelled/``, under the lock
        that claims hold too."""
        wanted = set(job_ids)
        cancelled: list[str] = []
        with self.locked():
            now, found = now_ms(), {}
            for path in self._pending_and_active():
                job_id = _id_of(os.path.basename(path))
                if job_id in wanted:
                    found[job_id] = path
            for job_id in dict.fromkeys(job_ids):
                source = found.get(job_id)
                record = None if source is None else self.read(source)
                if source is None or record is None:
                    continue
                target = self.dir("cancelled", _ready_name(record))
                os.rename(source, target)  # atomic: no claim can take it from here on
                if _records.cancel(record, now, reason) is WAITING:
                    _unmark(self.dir("left", job_id))
                self.write(target, record)
                self._ready_cache.pop(record.queue, None)
                cancelled.append(job_id)
                self._upstream_ended(job_id, CANCELLED)
        return cancelled

    def _pending_and_active(self) -> Iterator[str]:
        for folder in ("ready", "limited", "delayed"):
            for queue in self.queue_dirs(folder):
                for name in self.listdir(folder, queue):
                    yield self.dir(folder, queue, name)
        for folder in ("waiting", "active"):
            for name in self.listdir(folder):
                yield self.dir(folder, name)

    def cancelled_ids(self) -> set[str]:
        return set(map(_id_of, self.listdir("cancelled")))

    def _trim_to_count(self, folder: str, keep: int) -> None:
        """Keep the ``keep`` newest records of ``folder``: by name (dispatch order) in ``done``,
        which can hold many thousands, by the time written (finished) in ``failed``."""
        names = self.listdir(folder)
        if len(names) <= keep:
            return
        if folder == "failed":
            names.sort(key=lambda n: self._mtime(folder, n))
        for name in names[: len(names) - keep]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir(folder, name))

    def _trim_by_age(self) -> None:
        self._next_age_pass = time.monotonic() + retention_pass_interval(self.settings)
        for folder, cutoff_ms in zip(("done", "failed"), retention_cutoffs(self.settings), strict=True):
            if cutoff_ms is None:
                continue
            for name in self.listdir(folder):
                if self._mtime(folder, name) * 1000 < cutoff_ms:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir(folder, name))

    def _trim_expired(self) -> None:
        """Remove the finished records whose own ``keep_ms`` ran out: ``expiring/`` holds an
        empty marker ``<expiry ms>-<id>.json`` per such record (named as delayed jobs are), so
        the soonest sort first."""
        now = now_ms()
        due = {}
        for marker in self.listdir("expiring"):
            if int(marker.split("-", 1)[0]) > now:
                break
            due[_id_of(marker)] = marker
        if not due:
            return
        for folder in ("done", "failed"):
            for name in self.listdir(folder):
                if _id_of(name) in due:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir(folder, name))
        for marker in due.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir("expiring", marker))

    def trim(self) -> None:
        """Apply retention now: by count, by age, and each record's own ``keep_ms``."""
        with self.locked():
            self._trim_to_count("done", self.settings.retention)
            if self.settings.failed_retention is not None:
                self._trim_to_count("failed", self.settings.failed_retention)
            self._trim_by_age()
            self._trim_expired()
            self._drop_dead_locks()
            self._drop_expired_values()

    # -- the keyed store: kv/<digest of the key>.kv, a JSON header line then the value ------------
    def _kv_path(self, key: str) -> str:
        return self.dir("kv", hashlib.sha256(key.encode()).hexdigest()[:40] + ".kv")

    def kv_write(self, key: str, value: bytes, expires_ms: int | None, only_new: bool = False) -> bool:
        """Write one value's file; with ``only_new``, under the store lock and only if no live
        value is there. Whether it was written."""
        if only_new:
            with self.locked():
                return self.kv_get(key) is None and self.kv_write(key, value, expires_ms)
        header = json.dumps({"key": key, "expires_ms": expires_ms}).encode()
        self.write_bytes(self._kv_path(key), header + b"\n" + value)
        return True

    def kv_get(self, key: str) -> bytes | None:
        found = self._kv_read(self._kv_path(key), key)
        return found[1] if found is not None and found[0] == key else None

    def kv_scan(self, prefix: str) -> dict[str, bytes]:
        found = {}
        for entry in self._entries("kv"):
            read = self._kv_read(entry.path, prefix)
            if read is not None:
                found[read[0]] = read[1]
        return found

    def _drop_expired_values(self) -> None:
        """Remove the keyed store's expired values (reading each file's header line only)."""
        for entry in self._entries("kv"):
            self._kv_read(entry.path, None)

    def kv_delete(self, key: str) -> bool:
        with self.locked():
            live = self.kv_get(key) is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._kv_path(key))
            return live

    def _kv_read(self, path: str, prefix: str | None) -> tuple[str, bytes] | None:
        """The key and value of one file while it lives and its key starts with ``prefix``
        (the value is read only then; ``None``: the header alone is read); an expired one is
        removed, one that cannot be read is set aside."""
        try:
            with open(path, "rb") as handle:
                header = json.loads(handle.readline())
                key, expires = str(header["key"]), header.get("expires_ms")
                if expires is not None and now_ms() >= expires:
                    os.unlink(path)
                    return None
                return (key, handle.read()) if prefix is not None and key.startswith(prefix) else None
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self._set_aside(path, f"not a keyed-store value ({exc!r})")
            return None

    def _drop_dead_locks(self) -> None:
        """Remove the lock files of ``unique/`` that no live job holds (its job gone, in a status
        that no longer holds it, or expired), under the store lock that dispatches take: a dead
        lock would be taken over by the next dispatch of its key anyway, and kept it would make
        ``unique/`` grow with every unique job ever dispatched."""
        names = [e.name for e in self._entries("unique") if e.name.endswith(".json")]
        if not names:
            return
        statuses, now = self._status_map(), now_ms()
        for name in names:
            path = self.dir("unique", name)
            lock = self._read_lock(path)
            if lock is None:
                continue
            status = statuses.get(str(lock.get("job_id")))
            if not lock_is_live(str(lock.get("holds")), status, lock.get("expires_ms"), now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _mtime(self, folder: str, name: str) -> float:
        try:
            return os.stat(self.dir(folder, name)).st_mtime
        except FileNotFoundError:
            return 0.0

    def heartbeat(self, leases: Sequence[tuple[str, str | None]]) -> list[bool]:
        alive = []
        with self.locked():
            lease = now_ms() + int(self.settings.lease_s * 1000)
            for job_id, token in leases:
                path = self._find_active(job_id)
                stored = None if path is None else self.read(path)
                ok = path is not None and stored is not None and stored.token == token
                if ok and path is not None and stored is not None:
                    stored.lease_ms = lease
                    self.write(path, stored)
                alive.append(ok)
        return alive

    def update_meta(self, job_id: str, token: str | None, meta: dict[str, Any]) -> bool:
        with self.locked():
            path = self._find_active(job_id)
            stored = None if path is None else self.read(path)
            if path is None or stored is None or stored.token != token:
                return False
            stored.meta.update(meta)
            self.write(path, stored)
            return True

    def paths(self) -> Iterator[str]:
        yield from self._pending_and_active()
        for folder in ("done", "failed", "cancelled"):
            for name in self.listdir(folder):
                yield self.dir(folder, name)

    def find(self, job_id: str) -> JobRecord | None:
        suffix = f"-{job_id}.json"
        for path in self.paths():
            if path.endswith(suffix):
                record = self.read(path)
                if record is not None:
                    return record
        return next((r for r in self.set_aside() if r.id == job_id), None)

    def find_many(self, job_ids: set[str]) -> dict[str, JobRecord]:
        """The records of ``job_ids`` that are stored, by id: one pass over the folders, which
        reads only the files of those jobs."""
        found: dict[str, JobRecord] = {}
        for path in self.paths():
            job_id = _id_of(os.path.basename(path))
            if job_id in job_ids and job_id not in found and (record := self.read(path)) is not None:
                found[job_id] = record
        if len(found) < len(job_ids):
            for record in self.set_aside():
                if record.id in job_ids:
                    found.setdefault(record.id, record)
        return found

    def all_records(self) -> Iterator[JobRecord]:
        for path in self.paths():
            record = self.read(path)
            if record is not None:
                yield record
        yield from self.set_aside()

    def set_aside(self) -> Iterator[JobRecord]:
        """The job files moved to ``corrupt/``, as failed records that say so (what was set
        aside without a job id in its name was never a job, and is not listed)."""
        for entry in sorted(self._entries("corrupt"), key=lambda e: e.name):
            found = JOB_ID.search(entry.name)
            if found is None:
                continue
            record = unreadable(found.group(1), "default", f"the file was set aside as corrupt/{entry.name}")
            with contextlib.suppress(FileNotFoundError):
                record.created_ms = record.finished_ms = int(entry.stat().st_mtime * 1000)
            yield record

    def requeue(self, job_ids: Sequence[str]) -> int:
        wanted = set(job_ids)
        count = 0
        with self.locked():
            for name in self.listdir("failed"):
                if _id_of(name) not in wanted:
                    continue
                path = self.dir("failed", name)
                record = self.read(path)
                if record is None:
                    continue
                record.attempt = record.reclaims = 0
                record.available_ms = now_ms()
                record.finished_ms = None
                self._place_pending(record)
                os.unlink(path)
                count += 1
        return count

    def forget(self, job_ids: Sequence[str]) -> int:
        wanted = set(job_ids)
        count = 0
        with self.locked():
            for folder in ("done", "failed", "cancelled"):
                for name in self.listdir(folder):
                    if _id_of(name) in wanted:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self.dir(folder, name))
                            count += 1
        return count

    def purge(self) -> None:
        with self.locked():
            for folder in STATE_DIRS:
                for dirpath, _, files in os.walk(self.dir(folder)):
                    for name in files:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(dirpath, name))
            for folder in ("edges", "left"):
                for entry in self._entries(folder):
                    _unmark(entry.path)


def _mark(folder: str, name: str) -> None:
    """An empty marker file ``folder/name``. Not fsynced: a mark lost in a crash is made good
    by ``_rejudge_waiting``, which needs none."""
    os.makedirs(folder, mode=FOLDER_MODE, exist_ok=True)
    os.close(os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT, FILE_MODE))


def _unmark(folder: str) -> None:
    """Remove a folder of marker files, if it is there."""
    shutil.rmtree(folder, ignore_errors=True)


def _writer_runs(tmp_name: str) -> bool:
    """Whether the process that is writing ``tmp/<pid>-...`` still runs on this machine."""
    pid_text = tmp_name.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def _mtime_ms(path: str) -> int:
    try:
        return int(os.stat(path).st_mtime * 1000)
    except FileNotFoundError:
        return now_ms()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileDriver(QueueDriver):
    """Durable, multi-process, at-least-once queue in a folder of JSON files."""

    uses_leases: ClassVar[bool] = True
    layout: ClassVar[Layout] = LAYOUT
    #: ready files sort by ``PRIORITY_OFFSET - priority`` in ten digits
    max_priority: ClassVar[int] = PRIORITY_OFFSET - 1

    def __init__(self, settings: QueueSettings | str | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        settings = self.settings
        self.root = local_path(settings)
        self.store = FileStore(self.root, settings, self.auto_migrate)
        self._thread: ThreadPoolExecutor | None = None
        self._waits = PollingWaits()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ``FileStore`` call on this driver's I/O thread; a filesystem fault becomes an
        error of the tree that names the queue folder."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khadem-file")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except PermissionError as exc:
            raise DriverError(f"the file queue {self.root!r} cannot be written ({exc}); check the "
                              "folder's permissions") from exc
        except OSError as exc:
            raise DriverError(f"the file queue {self.root!r} failed: {exc}") from exc

    async def open(self) -> None:
        await self._call(self.store.open)
        self.layout_change = self.store.layout_change

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def push(self, records: Sequence[JobRecord]) -> None:
        await self._call(self.store.insert, records)
        self._waits.wake()

    async def push_keyed(self, record: JobRecord, lock: Lock) -> str | None:
        holder = await self._call(self.store.insert_keyed, record, lock)
        if holder is None:
            self._waits.wake()
        return holder

    def rules_changed(self) -> None:
        self.store.rules.forget()

    def wake_claims(self) -> None:
        self._waits.wake()

    def interrupt_waits(self) -> None:
        self._waits.interrupt()

    async def reserve(self, queues: Sequence[str], limit: int, wait_s: float,
                      free: Mapping[str, int] | None = None, runs: Runs | None = None) -> list[JobRecord]:
        claim = functools.partial(self._call, self.store.claim, queues, limit, free, runs)
        return await self._waits.reserve(claim, wait_s)

    async def heartbeat(self, records: Sequence[JobRecord]) -> list[bool]:
        return await self._call(self.store.heartbeat, [(r.id, r.token) for r in records])

    async def _settle(self, record: JobRecord, settlement: Settlement) -> bool:
        outcome = await self._call(self.store.settle, record, settlement)
        if outcome == "settled":
            settlement.apply(record)
            if settlement.verb is RETRY or settlement.verb is RELEASE or record.lane is not None:
                self._waits.wake()  # a job to claim, or a slot of its lane free again
        elif outcome == "stopped":
            settlement.stop(record)
        return outcome is not None

    async def cancel(self, job_ids: Sequence[str], reason: str) -> list[str]:
        return await self._call(self.store.cancel, list(job_ids), reason)

    async def aborted(self, records: Sequence[JobRecord]) -> list[str]:
        cancelled = await self._call(self.store.cancelled_ids)
        return [r.id for r in records if r.id in cancelled]

    async def update_meta(self, record: JobRecord, meta: dict[str, Any]) -> bool:
        return await self._call(self.store.update_meta, record.id, record.token, meta)

    async def _records(self) -> list[JobRecord]:
        records = await self._call(lambda: [due_view(r) for r in self.store.all_records()])
        return sorted(records, key=lambda r: (r.created_ms, r.meta.get("_seq", 0)))

    async def get(self, job_id: str) -> JobRecord | None:
        record = await self._call(self.store.find, job_id)
        return None if record is None else due_view(record)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        found = await self._call(self.store.find_many, set(job_ids))
        return [None if (r := found.get(i)) is None else due_view(r) for i in job_ids]

    async def jobs(self, status: JobStatus | None = None, queue: str | None = None,
                   limit: int | None = None) -> list[JobRecord]:
        records = [r for r in await self._records()
                   if (status is None or r.status is status) and (queue is None or r.queue == queue)]
        return records[-limit:] if limit else records

    async def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        counts = empty_counts()
        for record in await self.jobs(queue=queue):
            counts[record.status] += 1
        return counts

    async def requeue(self, job_ids: Iterable[str]) -> int:
        count = await self._call(self.store.requeue, list(job_ids))
        if count:
            self._waits.wake()
        return count

    async def forget(self, job_ids: Sequence[str]) -> int:
        return await self._call(self.store.forget, list(job_ids))

    async def trim(self) -> None:
        await self._call(self.store.trim)

    async def lane_use(self, queue: str, lanes: Mapping[str, LaneRule]) -> dict[str, LaneUse]:
        return await self._call(self.store.lane_use, queue, lanes)

    async def _kv_write(self, key: str, value: bytes, ttl_s: float | None, *, only_new: bool) -> bool:
        return await self._call(self.store.kv_write, key, value, expiry(now_ms(), ttl_s), only_new)

    async def kv_get(self, key: str) -> bytes | None:
        return await self._call(self.store.kv_get, check_key(key))

    async def kv_scan(self, prefix: str) -> dict[str, bytes]:
        return await self._call(self.store.kv_scan, check_prefix(prefix))

    async def kv_delete(self, key: str) -> bool:
        return await self._call(self.store.kv_delete, check_key(key))

    async def purge(self) -> None:
        await self._call(self.store.purge)



def _check_queues(queues: Iterable[str]) -> None:
    """Refuse a queue name that is not safe as one folder name (``limits.queue_name``): the
    driver joins queue names into paths, so ``..`` or ``a/b`` would reach other folders."""
    for queue in queues:
        limits.queue_name(queue)
