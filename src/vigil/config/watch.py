"""Hot reload without signals: the configuration, rules and policy files are
watched with inotify and the agent is asked to reload when their content
changes.

Directories are watched, never the files themselves: a Kubernetes ConfigMap
volume updates by writing a new ``..<timestamp>`` directory and renaming the
``..data`` symlink over the old one (the file names are symlinks through
``..data``), and editors replace files by rename; both are events in the
directory.  After a burst of events settles, the content of every watched file
is hashed; only a real change asks for a reload, so touching a file or a
kubelet resync does nothing.  The reload itself (validate, swap, keep the
last good set on error, say so by an alert) is the agent's.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Callable, Iterable

from inotify_simple import INotify, flags

from vigil.alerts.alert import Alert

log = logging.getLogger("vigil.config.watch")

RULE_RELOAD_FAILED = "vigil configuration reload failed"
WATCH_FLAGS = (flags.CREATE | flags.DELETE | flags.MOVED_TO | flags.MOVED_FROM
               | flags.CLOSE_WRITE | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF)
SETTLE = 0.2        # seconds without events before the files are read
SETTLE_MAX = 2.0    # ... but at most this long after the first event


def expand(path: str) -> list:
    """The files a configured path stands for: itself, or a directory's visible
    files (``..data`` and the other dot names of a ConfigMap volume are skipped)."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return []
        return [os.path.join(path, n) for n in names
                if not n.startswith(".") and os.path.isfile(os.path.join(path, n))]
    return [path]


def fingerprint(paths: Iterable[str]) -> str:
    """A digest of the names and contents of every file the paths stand for
    (a missing or unreadable file counts as such)."""
    h = hashlib.sha256()
    for p in paths:
        for f in expand(p):
            h.update(f.encode() + b"\0")
            try:
                with open(f, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
            except OSError as e:
                h.update(f"error {e.errno}".encode())
    return h.hexdigest()


def watch_dirs(paths: Iterable[str]) -> set:
    """The directories to watch for ``paths``: each path's directory, and a
    directory path itself."""
    out = set()
    for p in paths:
        p = os.path.abspath(p)
        if os.path.isdir(p):
            out.add(p)
        parent = os.path.dirname(p)
        if os.path.isdir(parent):
            out.add(parent)
    return out


class ConfigWatcher:
    """Calls ``on_change()`` (from its own thread) when the content behind
    ``paths()`` changes; ``paths`` is asked again after every change, so a
    reloaded configuration naming other files is followed."""

    def __init__(self, paths: Callable[[], list], on_change: Callable[[], None],
                 settle: float = SETTLE):
        self.paths = paths
        self.on_change = on_change
        self.settle = settle
        self.changes = 0
        self._inotify = INotify()
        self._wds: dict = {}            # directory -> watch descriptor
        self._stop = threading.Event()
        self._thread = None
        self._last = ""

    def _rewatch(self) -> list:
        paths = list(self.paths())
        want = watch_dirs(paths)
        for d in set(self._wds) - want:
            try:
                self._inotify.rm_watch(self._wds.pop(d))
            except OSError:
                pass        # already gone with its directory
        for d in want - set(self._wds):
            try:
                self._wds[d] = self._inotify.add_watch(d, WATCH_FLAGS)
            except OSError as e:
                log.warning("cannot watch %s for changes: %s", d, e.strerror)
        return paths

    def start(self) -> "ConfigWatcher":
        self._last = fingerprint(self._rewatch())
        self._thread = threading.Thread(target=self._run, name="vigil-config-watch", daemon=True)
        self._thread.start()
        log.info("watching %s for changes", ", ".join(sorted(self._wds)) or "nothing")
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._inotify.read(timeout=500):
                continue
            # a ConfigMap update is a burst (new dir, symlink, rename, delete): let it
            # settle, but a directory that never goes quiet does not hold reloads off
            until = time.monotonic() + SETTLE_MAX
            while self._inotify.read(timeout=int(self.settle * 1000)):
                if self._stop.is_set():
                    return
                if time.monotonic() >= until:
                    break
            paths = self._rewatch()      # directories may have come or gone
            now = fingerprint(paths)
            if now != self._last:
                self._last = now
                self.changes += 1
                log.info("configuration files changed: reloading")
                self.on_change()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._inotify.close()

    def stats(self) -> dict:
        return {"changes": self.changes, "watched_dirs": len(self._wds)}


def reload_failed_alert(what: str, error: str) -> Alert:
    """The alert saying a reload was refused and the last good set kept."""
    return Alert(time=time.time_ns(), rule=RULE_RELOAD_FAILED, priority="error",
                 output=f"{RULE_RELOAD_FAILED}, keeping the last good {what}: {error}",
                 output_fields={"vigil.reload": what, "vigil.error": error},
                 tags=["vigil", "configuration"], source="internal")


__all__ = ["ConfigWatcher", "RULE_RELOAD_FAILED", "expand", "fingerprint", "watch_dirs",
           "reload_failed_alert"]
