"""Files the agent creates (the alert store and its -wal/-shm, the alert log
and its rotations, capture files) and the directories it makes for them.

* Files are 0600 (``FileMode(0o640, group)`` lets a group read them), the
  mode set with fchmod on every open, whatever the umask and whatever mode a
  file from an older run had.
* Directories vigil creates are 0700 (existing ones are left as they are:
  an administrator may have made /var/lib/vigil a link to another disk).
* A symbolic link planted where one of these files goes is never followed:
  the open uses O_NOFOLLOW and refuses with :class:`UnsafeFileError`, which
  names the path.  Anything but a regular file there is refused too.
"""
from __future__ import annotations

import errno
import grp
import os
import stat
from dataclasses import dataclass
from typing import Optional, Union

DIR_MODE = 0o700
FILE_MODES = (0o600, 0o640)


class UnsafeFileError(OSError):
    """A path vigil would write is a symlink or not a regular file."""

    def __init__(self, path: str, why: str):
        self.path = path
        super().__init__(f"refusing to use {path}: {why}")

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class FileMode:
    """The mode (0600 or 0640) and group (a gid, or None: leave it) of a file."""
    mode: int = 0o600
    gid: Optional[int] = None

    @classmethod
    def parse(cls, mode: Union[int, str, None], group: Union[int, str, None] = None
              ) -> "FileMode":
        """From the ``file_mode`` / ``group`` settings; ValueError says what is wrong."""
        m = 0o600 if mode is None else mode
        if isinstance(m, str):
            try:
                m = int(m, 8)
            except ValueError:
                raise ValueError(f"expected 0600 or 0640, got {mode!r}") from None
        if isinstance(m, bool) or not isinstance(m, int) or m not in FILE_MODES:
            # YAML reads a bare 0640 as the octal 416, 640 as decimal
            if isinstance(m, int) and not isinstance(m, bool) and m in (600, 640):
                m = int(str(m), 8)
            else:
                raise ValueError(f"expected 0600 or 0640, got {mode!r}")
        gid = None
        if group is not None and group != "":
            if isinstance(group, bool):
                raise ValueError(f"expected a group name or id, got {group!r}")
            if isinstance(group, int):
                gid = group
            elif isinstance(group, str) and group.isdigit():
                gid = int(group)
            elif isinstance(group, str):
                try:
                    gid = grp.getgrnam(group).gr_gid
                except KeyError:
                    raise ValueError(f"unknown group {group!r}") from None
            else:
                raise ValueError(f"expected a group name or id, got {group!r}")
            if not 0 <= gid < 2**32 - 1:
                raise ValueError(f"bad group id {group!r}")
        return cls(m, gid)


PRIVATE = FileMode()


def make_dirs(directory: str) -> None:
    """Create ``directory`` and missing parents, each 0700 (umask-independent)."""
    directory = os.path.abspath(directory)
    missing = []
    d = directory
    while not os.path.lexists(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue            # made meanwhile by someone else: theirs to keep
        os.chmod(d, DIR_MODE, follow_symlinks=False)
    if not os.path.isdir(directory):
        raise NotADirectoryError(20, f"{directory} is not a directory")


def refuse_symlink(path: str) -> None:
    """UnsafeFileError if ``path`` is a symlink or exists as something else
    than a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(path, "it is a symbolic link (not followed)")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(path, "it is not a regular file")


def open_private(path: str, flags: int = os.O_WRONLY | os.O_APPEND,
                 mode: FileMode = PRIVATE, make_parent: bool = True) -> int:
    """An fd on ``path`` opened with O_CREAT|O_NOFOLLOW (plus ``flags``),
    a regular file with ``mode`` set; the parent directory made if missing."""
    path = os.fspath(path)
    if make_parent:
        make_dirs(os.path.dirname(os.path.abspath(path)))
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the open (cleared below)
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     mode.mode)
    except OSError as e:
        if e.errno == errno.ELOOP:      # the last component is a symlink
            raise UnsafeFileError(path, "it is a symbolic link (not followed)") from None
        if e.errno == errno.ENXIO:      # a FIFO without a reader, a socket
            raise UnsafeFileError(path, "it is not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(path, "it is not a regular file")
        os.set_blocking(fd, True)
        set_mode(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def set_mode(fd: int, mode: FileMode) -> None:
    """The file's mode and group, on its fd."""
    if mode.gid is not None:
        os.fchown(fd, -1, mode.gid)
    os.fchmod(fd, mode.mode)


def fix_mode(path: str, mode: FileMode) -> None:
    """Set ``mode`` on an existing file (never through a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        set_mode(fd, mode)
    finally:
        os.close(fd)


__all__ = ["UnsafeFileError", "FileMode", "PRIVATE", "DIR_MODE", "make_dirs",
           "refuse_symlink", "open_private", "set_mode", "fix_mode"]
