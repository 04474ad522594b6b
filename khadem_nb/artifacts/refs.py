"""What a record keeps of a value that lives in the artifact store, and the marker of a file.

An :class:`ArtifactRef` is small and typed: the SHA-256 digest of the stored bytes, their kind
(``npy``, ``parquet``, ``bytes``, ``file`` or ``json``), their size, the store's URL (without
credentials) and what describes the value without reading it (an array's shape and dtype, a
DataFrame's columns and rows, a file's name). It travels in JSON as a tagged object (see
``serializer``) and loads its value on :meth:`ArtifactRef.load`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import SerializationError

KINDS = ("npy", "parquet", "bytes", "file", "json")
SUFFIXES = {"npy": ".npy", "parquet": ".parquet", "bytes": ".bin", "file": ".bin", "json": ".json"}


@dataclass(frozen=True)
class ArtifactRef:
    """A value kept in the artifact store: ``load()`` reads it (an array memory-mapped when the
    store is a local folder, a file as a local path); its ``repr`` describes it without reading."""

    digest: str
    kind: str
    size: int
    store: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    columns: tuple[str, ...] | None = None
    name: str | None = None

    def load(self) -> Any:
        """The value: an array, a DataFrame, bytes, JSON data, or a local path for a file."""
        from .store import stores

        return stores.store_of(self).read(self)

    def describe(self) -> str:
        """``ndarray (10000, 1000) float64, 76 MB``: what the value is and how big, unread."""
        size = human_size(self.size)
        if self.kind == "npy":
            return f"ndarray {tuple(self.shape or ())} {self.dtype}, {size}"
        if self.kind == "parquet":
            rows = "" if self.shape is None else f"{self.shape[0]} rows x "
            return f"DataFrame {rows}{len(self.columns or ())} columns, {size}"
        if self.kind == "file":
            return f"file {self.name}, {size}"
        return f"{self.kind} {size}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def to_json(self) -> dict[str, Any]:
        """The reference as plain JSON data (``None`` fields left out)."""
        data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactRef:
        """The reference a record holds; a malformed one is a ``SerializationError``."""
        try:
            kind, digest = str(data["kind"]), str(data["digest"])
            shape, columns = data.get("shape"), data.get("columns")
            ref = cls(digest=digest, kind=kind, size=int(data["size"]), store=str(data["store"]),
                      shape=None if shape is None else tuple(int(n) for n in shape),
                      dtype=data.get("dtype"),
                      columns=None if columns is None else tuple(str(c) for c in columns),
                      name=data.get("name"))
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"a stored artifact reference is malformed ({exc!r}): {data!r}") \
                from None
        if kind not in KINDS or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise SerializationError(f"a stored artifact reference is malformed: kind {kind!r} "
                                     f"(valid: {', '.join(KINDS)}), digest {digest!r}")
        return ref


class FileArtifact:
    """A file to keep in the artifact store (``kn.artifact(path)``): a plot, a model file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"artifact({str(self.path)!r})"


def artifact(path: str | os.PathLike[str]) -> FileArtifact:
    """Mark the file at ``path`` to be stored in the artifact store when it is returned or
    passed: the job's result (or arguments) keep a reference, and ``load()`` gives back a
    local path to a copy. A path that is not a readable file is a ``SerializationError``."""
    if not isinstance(path, str | os.PathLike):
        raise SerializationError(f"artifact() takes a path to a file, got {type(path).__name__}")
    found = Path(path)
    if not found.is_file():
        raise SerializationError(f"artifact({str(path)!r}): no such file")
    return FileArtifact(found)


def human_size(size: int) -> str:
    """Bytes as people read them: ``76 MB``, ``512 B`` (powers of 1000, as file browsers do)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover - the loop always returns
