"""The few durable-file primitives the WAL and the snapshotter share.

A file only "exists" after a crash if its data was fsynced before it got its
final name, and the rename itself was made durable by fsyncing the directory
that holds it. Everything here follows that order.
"""
from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger("engine.wal")

# etcd's fileutil.PrivateDirMode / PrivateFileMode.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

# fdatasync skips flushing metadata such as mtime but still flushes the file
# size when it grew (POSIX requires what is needed to read the data back),
# which is all an appended log needs. macOS has no fdatasync.
fdatasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> int:
    """fsync a file by its path (one written through another handle, e.g.
    SQLite's); returns its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def makedirs_durable(path: str | os.PathLike) -> None:
    """mkdir -p, fsyncing the parent of every directory it creates, so the
    new directories survive a crash along with what is later put in them."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    makedirs_durable(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    fsync_dir(parent)


def makedirs_private(path: str | os.PathLike) -> bool:
    """makedirs_durable (every directory it creates is 0700); True if
    ``path`` itself did not exist before."""
    existed = os.path.isdir(path)
    makedirs_durable(path)
    return not existed


def check_dir_permission(path: str | os.PathLike, logger: logging.Logger | None = None) -> bool:
    """Warn, as etcd does, when an existing data directory is more open than
    0700; False then. (etcd only warns: an operator may have reasons.)"""
    mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & ~PRIVATE_DIR_MODE:
        (logger or log).warning(
            "check file permission: directory \"%s\" exist, but the permission is \"%s\". The recommended "
            "permission is \"-rwx------\" to prevent possible unprivileged access to the data.",
            os.fspath(path), stat.filemode(mode))
        return False
    return True


def make_private(path: str | os.PathLike) -> None:
    """Take group and other permissions off a file or directory an older
    version created more open (0644 -> 0600, 0755 -> 0700)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        try:
            os.chmod(path, mode & ~0o077)
        except OSError as e:  # not ours (a read-only tool run by another user)
            log.warning("could not make %s private: %s", os.fspath(path), e.strerror)
            return
        log.info("made %s private (%o -> %o)", os.fspath(path), mode, mode & ~0o077)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_atomic(path: str | os.PathLike, data: bytes, *, keep_open: bool = False) -> int | None:
    """Create `path` with `data` so that after a crash it either does not
    exist or is complete: write `path.tmp`, fsync, rename, fsync the dir.

    With keep_open the still-open descriptor (O_WRONLY|O_APPEND, now under
    the final name) is returned for further appends.
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        os.close(fd)
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None
