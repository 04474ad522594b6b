"""The artifact store: content-addressed objects on any fsspec filesystem.

An object is named by the SHA-256 digest of its bytes, ``objects/<2 hex>/<digest><suffix>``
under the store's root, so the same content is written once however often it is returned.
A value is first written to a temporary file while its digest is computed, then moved into
place in one step: a rename on a local folder, one ``put`` of the whole object elsewhere (an
S3 object appears whole or not at all). Nothing is pickled: arrays are ``.npy`` written and
read with ``allow_pickle=False``, DataFrames Parquet (pyarrow), bytes and files as they are.

Every read is checked against the reference: a missing object or one whose size or digest
differs is a ``CorruptQueueError`` naming the digest. Objects of a remote store are fetched
into a local cache folder (``$KHADEM_CACHE``, else ``~/.cache/khadem_nb/artifacts``), which is
trimmed, least recently used first, to ``$KHADEM_CACHE_LIMIT`` bytes (default 20 GiB).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import ConfigError, CorruptQueueError, DriverUnavailableError, KhademError, SerializationError
from .refs import SUFFIXES, ArtifactRef, FileArtifact

T = TypeVar("T")
CHUNK = 1 << 20  # bytes read at a time when hashing or copying
VERIFIED_KEPT = 10_000  # local objects whose digest this process checked, remembered
DEFAULT_CACHE_LIMIT = 20 * 2**30


class ArtifactStore:
    """One store, opened from an fsspec URL (a local folder, ``memory://``, ``s3://bucket/prefix``)
    with ``options`` passed to fsspec (an S3 endpoint, keys); ``max_artifact`` bounds one object,
    and JSON over ``inline_limit`` bytes in a record moves here (``offload.shrink``)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None, *, max_artifact: int,
                 inline_limit: int = 64 * 2**10) -> None:
        self.url = url
        self.max_artifact = max_artifact
        self.inline_limit = inline_limit
        self.fs, self.root = _open_fs(url, dict(options or {}))
        self.local = _is_local(self.fs)
        self._verified: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._check_reachable()

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- writing -----------------------------------------------------------------------------
    def put(self, value: Any, what: str) -> ArtifactRef:
        """Store ``value`` (an array, a DataFrame, bytes, a ``FileArtifact``) and return its
        reference; ``what`` names it in errors."""
        kind, write, describe = _writer_for(value, what)
        expected = describe.pop("expected_size", None)
        if expected is not None and expected > self.max_artifact:
            raise SerializationError(self._too_big(what, expected))
        try:
            size, digest = self._write(kind, write, what)
        except OSError as exc:  # a full disk, a folder gone: a fault of the store, retried
            raise DriverUnavailableError(f"the artifact store {self.url} could not write {what}: {exc}") \
                from None
        return ArtifactRef(digest=digest, kind=kind, size=size, store=self.url, **describe)

    def _write(self, kind: str, write: Writer, what: str) -> tuple[int, str]:
        """Write through a temporary file, hashing, then commit: the object's size and digest."""
        tmp = self._temp_path()
        try:
            with open(tmp, "wb") as raw:
                hashing = _HashingWriter(raw)
                try:
                    write(hashing)
                except (ValueError, TypeError, ImportError) as exc:  # an object array, bad columns
                    raise SerializationError(f"{what} cannot be stored as {kind}: {exc}") from None
            size, digest = hashing.size, hashing.hexdigest()
            if size > self.max_artifact:
                raise SerializationError(self._too_big(what, size))
            self._commit(tmp, self._object_path(digest, kind))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size, digest

    def put_json(self, text: str, what: str) -> ArtifactRef:
        """Store JSON text (a part of a payload or result over the inline limit)."""
        return self.put(_JsonText(text), what)

    def _too_big(self, what: str, size: int) -> str:
        return (f"{what} is {size:,} bytes, over queue.max_artifact ({self.max_artifact:,} bytes); "
                "raise queue.max_artifact or store less")

    def _temp_path(self) -> str:
        """A new temporary file's path: inside the store for a local one (so the rename that
        commits it never crosses filesystems), in the cache folder otherwise."""
        folder = Path(self.root) / "tmp" if self.local else cache_folder() / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{uuid.uuid4().hex}.part")

    def _commit(self, tmp: str, final: str) -> None:
        """Move the written object into place. Content stored before is not written again in a
        local folder, only its time refreshed; a remote object is put again (an S3 object's time
        cannot be touched): either way a collection in progress never takes an object that a
        dispatch has just referred to (``collect``)."""
        if self.local:
            if os.path.exists(final):
                os.utime(final)
                return
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
            return
        self._io("write", final, lambda: self.fs.put_file(tmp, final))

    # -- reading -----------------------------------------------------------------------------
    def read(self, ref: ArtifactRef) -> Any:
        """The value ``ref`` names, checked against its size and digest."""
        path = self.local_file(ref)
        if ref.kind == "npy":
            import numpy as np

            return np.load(path, mmap_mode="r" if self.local else None, allow_pickle=False)
        if ref.kind == "parquet":
            import pandas as pd

            return pd.read_parquet(path, engine="pyarrow")
        if ref.kind == "file":
            return _named_copy(path, ref)
        data = path.read_bytes()
        if ref.kind == "json":
            from ..serializer import decode_value

            return decode_value(json.loads(data))
        return data

    def local_file(self, ref: ArtifactRef) -> Path:
        """A local, verified file with the object's bytes: the object itself in a local store,
        a copy in the cache folder otherwise."""
        final = self._object_path(ref.digest, ref.kind)
        if self.local:
            self._check_local(Path(final), ref)
            return Path(final)
        cached = cache_folder() / f"{ref.digest}{SUFFIXES[ref.kind]}"
        if cached.exists() and cached.stat().st_size == ref.size:
            os.utime(cached)  # recently used: the cache trim keeps it
            return cached
        tmp = self._temp_path()
        try:
            self._io("read", final, lambda: self.fs.get_file(final, tmp), missing=ref)
            _check_digest(Path(tmp), ref, self.url)
            os.replace(tmp, cached)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        trim_cache()
        return cached

    def _check_local(self, path: Path, ref: ArtifactRef) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise CorruptQueueError(f"artifact {ref.digest} is missing from the store {self.url}") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in self._verified:
            return
        _check_digest(path, ref, self.url)
        self._verified[key] = None
        while len(self._verified) > VERIFIED_KEPT:
            self._verified.popitem(last=False)

    # -- listing and deleting (garbage collection) ---------------------------------------------
    def objects(self) -> dict[str, tuple[str, float]]:
        """Every stored object: digest -> (path, modification time in epoch seconds)."""
        found: dict[str, tuple[str, float]] = {}
        base = f"{self.root}/objects"
        listing = self._io("list", base,
                           lambda: self.fs.find(base, detail=True) if self.fs.exists(base) else {})
        for path, info in listing.items():
            digest = os.path.basename(path).split(".", 1)[0]
            if len(digest) == 64:
                found[digest] = (path, _mtime(info))
        return found

    def delete(self, paths: list[str]) -> None:
        """Remove these objects (paths from :meth:`objects`)."""
        if paths:
            self._io("delete", paths[0], lambda: self.fs.rm(paths))

    def clear_temporaries(self, older_than_s: float) -> None:
        """Remove temporary files left by writers that died before committing them."""
        if not self.local:
            return
        folder = Path(self.root) / "tmp"
        if folder.is_dir():
            cutoff = time.time() - older_than_s
            for entry in os.scandir(folder):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)

    # -- plumbing ----------------------------------------------------------------------------
    def _object_path(self, digest: str, kind: str) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest}{SUFFIXES[kind]}"

    def _check_reachable(self) -> None:
        """Create the store's root where that is a folder; an unreachable store is a
        ``ConfigError`` naming it, at open."""
        try:
            if self.local:
                Path(self.root, "objects").mkdir(parents=True, exist_ok=True)
            else:  # the bucket (or the remote root's first folder) must exist: none is created
                self.fs.ls(self.root.split("/", 1)[0])
        except Exception as exc:
            raise ConfigError(f"the artifact store {self.url} cannot be opened: {exc}") from None

    def _io(self, what: str, path: str, call: Callable[[], T], missing: ArtifactRef | None = None) -> T:
        """``call()``, its failures named: a missing object is ``CorruptQueueError``, any other
        fault of the store ``DriverUnavailableError`` (a job failing on it is retried)."""
        try:
            return call()
        except FileNotFoundError:
            if missing is not None:
                raise CorruptQueueError(f"artifact {missing.digest} is missing from the store {self.url}") \
                    from None
            fault: object = "not found"
        except KhademError:
            raise
        except Exception as exc:
            fault = exc
        raise DriverUnavailableError(f"the artifact store {self.url} could not {what} {path}: {fault}")


class StoreRegistry:
    """The stores this process opened, by URL: a reference loads through the store it names,
    with the options it was opened with (a store not opened here opens with none: a local
    folder, or credentials from the environment)."""

    def __init__(self) -> None:
        self._open: dict[str, ArtifactStore] = {}

    def register(self, store: ArtifactStore) -> None:
        self._open[store.url] = store

    def store_of(self, ref: ArtifactRef) -> ArtifactStore:
        store = self._open.get(ref.store)
        if store is None:
            store = self._open[ref.store] = ArtifactStore(ref.store, max_artifact=2**63)
        return store


#: the explicit registry of open stores (see StoreRegistry)
stores = StoreRegistry()


_PLAIN = frozenset({str, int, float, bool, type(None)})


def load(value: Any) -> Any:
    """``value`` with every artifact reference in it (at any depth of dicts, lists and tuples,
    or in a pandas Series such as a column of ``g.results()``) replaced by what it names:
    ``kn.load(ref)`` for code that holds references."""
    if isinstance(value, ArtifactRef):
        return value.load()
    if type(value) is dict:
        for item in value.values():  # the usual arguments: plain values, nothing to load
            if type(item) not in _PLAIN:
                break
        else:
            return value
        loaded = {k: load(v) for k, v in value.items()}
        return loaded if any(loaded[k] is not v for k, v in value.items()) else value
    if type(value) is list:
        items = [load(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if type(value) is tuple:
        return tuple(load(v) for v in value)
    if type(value).__name__ == "Series" and type(value).__module__.startswith("pandas"):
        return value.map(load)  # a column of g.results(): each handle loaded
    return value


# -- writers by kind ------------------------------------------------------------------------------
class _JsonText:
    def __init__(self, text: str) -> None:
        self.data = text.encode("utf-8")


Writer = Callable[[Any], Any]  # writes a value to a binary file object (a _HashingWriter)


def _writer_for(value: Any, what: str) -> tuple[str, Writer, dict[str, Any]]:
    """The kind of ``value``, how to write it to a file object, and what its reference says
    of it (``expected_size``: known before writing, checked against ``max_artifact`` first)."""
    if isinstance(value, _JsonText):
        return "json", lambda out: out.write(value.data), {"expected_size": len(value.data)}
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return "bytes", lambda out: out.write(data), {"expected_size": len(data)}
    if isinstance(value, FileArtifact):
        return "file", lambda out: _copy_file(value.path, out, what), {"name": value.path.name}
    kind = type(value).__name__
    if kind == "ndarray":
        import numpy as np

        return "npy", lambda out: np.save(out, value, allow_pickle=False), {
            "shape": tuple(value.shape), "dtype": str(value.dtype), "expected_size": int(value.nbytes)}
    if kind == "DataFrame":
        return "parquet", lambda out: value.to_parquet(out, engine="pyarrow"), {
            "columns": tuple(str(c) for c in value.columns), "shape": tuple(value.shape)}
    raise SerializationError(f"{what} is a {kind}, which the artifact store does not keep "
                             "(arrays, DataFrames, bytes and kn.artifact files)")


def _copy_file(path: Path, out: Any, what: str) -> None:
    try:
        with open(path, "rb") as source:
            shutil.copyfileobj(source, out, CHUNK)
    except OSError as exc:
        raise SerializationError(f"{what}: the file {str(path)!r} cannot be read: {exc.strerror}") from None


class _HashingWriter:
    """A binary file object that hashes (SHA-256) and counts what is written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        return self.raw.write(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _check_digest(path: Path, ref: ArtifactRef, store: str) -> None:
    size = path.stat().st_size
    if size != ref.size:
        raise CorruptQueueError(f"artifact {ref.digest} in the store {store} is {size} bytes, "
                                f"its reference says {ref.size}: the object is damaged")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != ref.digest:
        raise CorruptQueueError(f"artifact {ref.digest} in the store {store} does not match its digest "
                                f"(found {digest.hexdigest()}): the object is damaged")


def _named_copy(path: Path, ref: ArtifactRef) -> Path:
    """A file artifact under its own name, in the cache folder (a hard link where it can be)."""
    target = cache_folder() / "files" / ref.digest / (ref.name or ref.digest)
    if target.exists() and target.stat().st_size == ref.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{uuid.uuid4().hex}.part")
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    return target


# -- the local cache ------------------------------------------------------------------------------
def cache_folder() -> Path:
    folder = Path(os.environ.get("KHADEM_CACHE") or Path.home() / ".cache" / "khadem_nb" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def trim_cache() -> None:
    """Delete the least recently used cached objects until the cache holds at most
    ``$KHADEM_CACHE_LIMIT`` bytes."""
    limit = int(os.environ.get("KHADEM_CACHE_LIMIT") or DEFAULT_CACHE_LIMIT)
    entries = [(e.stat().st_mtime, e.stat().st_size, e.path) for e in _cached_files(cache_folder())]
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            total -= size


def _cached_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.endswith(".part"):
            yield entry


# -- opening --------------------------------------------------------------------------------------
def _open_fs(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise ConfigError(f"the artifact store {url} needs a package fsspec could not import ({exc}); "
                          'for s3:// install s3fs (pip install "khadem_nb[s3]")') from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the artifact store {url} cannot be opened: {exc}") from None
    return fs, str(root).rstrip("/") or "/"


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _mtime(info: Mapping[str, Any]) -> float:
    for key in ("mtime", "LastModified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return time.time()  # unknown: treated as new, so never collected before its grace
