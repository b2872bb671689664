"""Alerts to a JSON-lines file with size-based rotation.

When writing the next line would take the file past ``max_bytes``, the file
is rotated like logrotate names it: ``alerts.jsonl`` -> ``alerts.jsonl.1``,
``.1`` -> ``.2`` ... and the oldest beyond ``backups`` is deleted.  With
``backups=0`` the file is simply started afresh.  ``max_bytes=0`` disables
rotation.  A single line larger than ``max_bytes`` is still written whole.

If the file is moved away by an external tool (logrotate without
copytruncate), the next write notices and reopens the path.

The file and its rotations are 0600 (``file_mode: 0640`` with ``group`` lets
a log shipper's group read them), set on every open whatever the umask; the
directory, when vigil makes it, is 0700; a symlink at the path is never
followed (:mod:`vigil.safe_files`).  With the alert store, the file is
written from the store (at-least-once: after a crash the last lines may
appear twice, with the same ``uuid``).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import Output
from vigil.alerts.outputs.registry import register
from vigil.alerts.outputs.stdout import alert_json_line
from vigil.safe_files import PRIVATE, FileMode, open_private


class FileOutput(Output):
    name = "file"
    durable = True

    def __init__(self, path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 5,
                 fsync: bool = False, mode: FileMode = PRIVATE):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.path = os.fspath(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self.fsync = bool(fsync)
        self.mode = mode if isinstance(mode, FileMode) else FileMode(int(mode))
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._ino = None
        self._size = 0
        self._written = 0
        self._rotations = 0
        self._closed = False
        self._open()

    @property
    def outbox_key(self) -> str:
        return f"file:{os.path.abspath(self.path)}"

    def _open(self) -> None:
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND, self.mode)
        st = os.fstat(fd)
        self._fd, self._ino, self._size = fd, (st.st_dev, st.st_ino), st.st_size

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def _moved_away(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    def _rotate(self) -> None:
        self._close_fd()
        if self.backups == 0:
            os.unlink(self.path)
        else:
            oldest = f"{self.path}.{self.backups}"
            if os.path.exists(oldest):
                os.unlink(oldest)
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._rotations += 1
        self._open()

    def emit(self, alert: Alert) -> bool:
        data = (alert_json_line(alert, self.json_shape) + "\n").encode("utf-8")
        with self._lock:
            if self._closed:
                raise RuntimeError("file output is closed")
            if self._fd is None or self._moved_away():
                self._close_fd()
                self._open()
            if self.max_bytes and self._size > 0 and self._size + len(data) > self.max_bytes:
                self._rotate()
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self._size += len(data)
            if self.fsync:
                os.fsync(self._fd)
            self._written += 1
        return True

    def close(self, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None and self.fsync:
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass
            self._close_fd()

    def stats(self) -> dict:
        return {"written": self._written, "rotations": self._rotations, "bytes": self._size,
                "path": self.path}


DEFAULT_FILE_PATH = "/var/log/vigil/alerts.jsonl"


@register("file", defaults={"path": DEFAULT_FILE_PATH, "max_bytes": 100 * 1024 * 1024,
                            "backups": 5, "fsync": False, "file_mode": "0600", "group": None},
          live_only=True)
def _build(s, stream) -> FileOutput:
    path, max_bytes, backups, fsync = (s.str("path"), s.size("max_bytes"), s.int("backups"),
                                       s.bool("fsync"))
    mode = s.file_mode()
    try:
        return FileOutput(path, max_bytes=max_bytes, backups=backups, fsync=fsync, mode=mode)
    except OSError as exc:
        raise s.bad("path", f"cannot open {path!r}: {exc}", quote=False) from None
