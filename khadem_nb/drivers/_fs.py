"""Filesystem checks shared by the file and SQLite drivers."""

from __future__ import annotations

import os

from ..config import QueueSettings
from ..errors import DriverError

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "ceph", "glusterfs", "lustre", "afs",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "davfs", "fuse.glusterfs",
})


#: queue folders and files are the owner's alone: job arguments, results and shipped code are
#: not for other accounts on the machine, whatever the umask
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def local_path(settings: QueueSettings) -> str:
    """The absolute path of a file-backed queue (``~`` expanded); config checked it is set."""
    assert settings.path is not None
    return os.path.abspath(os.path.expanduser(settings.path))


def mount_type(path: str, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The filesystem type of the mount that holds ``path`` (Linux), or ``None`` if unknown."""
    try:
        with open(mounts_file, encoding="utf-8") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) >= 3]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for mount_point, fs_type in mounts:
        mount_point = mount_point.replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def is_network_filesystem(path: str, mounts_file: str = "/proc/self/mounts") -> bool:
    kind = mount_type(os.path.dirname(os.path.abspath(path)) or "/", mounts_file)
    return kind is not None and kind in NETWORK_FILESYSTEMS


def check_parent_writable(path: str, *, kind: str, mode: int = 0o777) -> None:
    """Create the parent folder if needed (with ``mode``, before the umask); raise a clear
    error if it is not a writable folder."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=mode, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DriverError(f"cannot create {kind} {path!r}: a parent of it is a file, not a folder") from None
    except OSError as exc:
        raise DriverError(f"cannot create {kind} {path!r}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DriverError(f"cannot create {kind} {path!r}: folder {parent!r} is not writable")
