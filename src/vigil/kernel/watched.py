"""The files the rules care about, by identity (device + inode).

The rules' open filter names path prefixes (``/etc/shadow``, ``/etc/``); a
path is only one way to reach a file.  :class:`WatchedFiles` stats what those
prefixes name on this host and fills the kernel's ``watched_inodes`` map:

* a regular file a prefix covers: a *file* entry, its (dev, ino) -> the open
  modes wanted (OPEN_WANT_* bits): an open of that inode is sent whatever
  path, link, mount or root reached it;
* a directory a prefix covers: a *children* entry (the bits shifted by
  WATCH_CHILD_SHIFT): an open of any file directly in it is sent, so a file
  created later, or reached through a symlinked or bind-mounted directory,
  is caught too.  Directories below it are entered as well (a prefix covers
  the whole tree), up to :data:`MAX_ENTRIES` entries in all.

Symlinks are not followed: a prefix names the link, not what it points to.
Devices are keyed in the kernel's encoding (``MAJOR << 20 | MINOR``, which is
``i_sb->s_dev``; stat's ``st_dev`` is converted).  Files replaced by rename
(``passwd`` writes a new shadow and renames it over the old one) get a new
inode: :meth:`WatchedFiles.note_event` marks the set stale when a rename,
link, unlink or mkdir touches a watched tree, and :meth:`WatchedFiles.due`
asks for a fresh scan then (at most every :data:`MIN_RESCAN_S`) and every
:data:`RESCAN_S` anyway.

What the host sees only: containers reach their own files through their own
roots, which the path filter (on the resolved path) covers; their inodes are
not entered here.  Known limits: file systems whose stat (dev, ino) differ
from the kernel's inode (btrfs subvolumes, some overlayfs set-ups) are not
matched by identity, only by path.
"""
from __future__ import annotations

import logging
import os
import stat as _stat
import struct
import time
from typing import Optional

from vigil.events.decode import kernel_dev
from vigil.events.kinds import OPEN_WATCHED
from vigil.kernel.filters import OPEN_WANT_ALL

log = logging.getLogger("vigil.kernel.watched")

WATCH_CHILD_SHIFT = 2      # kernel/bpf/events.h
MAX_ENTRIES = 12000        # the map holds 16384 (kernel/bpf/maps.h)
RESCAN_S = 5.0
MIN_RESCAN_S = 0.2
WATCHED_FILE, WATCHED_DIR = OPEN_WATCHED.index("file"), OPEN_WATCHED.index("dir")

_KEY = struct.Struct("<IIQ")       # struct inode_key


def inode_key(kdev: int, ino: int) -> bytes:
    return _KEY.pack(kdev, 0, ino)


# the watched_bits map (kernel/bpf/maps.h): a one-hash Bloom filter the
# kernel tests before it looks a file up in watched_inodes
WATCH_BITS_LOG2 = 20
_MASK64 = (1 << 64) - 1


def watch_hash(kdev: int, ino: int) -> int:
    """watch_hash() of maps.h: the bit of (dev, ino)."""
    return (((ino ^ (kdev << 40)) * 0x9E3779B97F4A7C15) & _MASK64) >> (64 - WATCH_BITS_LOG2)


def watch_bits(entries) -> bytes:
    """The watched_bits value for these (kdev, ino) keys (u64 words, little
    endian: bit h is bit h % 8 of byte h // 8)."""
    out = bytearray(1 << (WATCH_BITS_LOG2 - 3))
    for kdev, ino in entries:
        h = watch_hash(kdev, ino)
        out[h >> 3] |= 1 << (h & 7)
    return bytes(out)


class WatchedFiles:
    """The identity side of the open filter: prefixes -> watched inodes."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self.prefixes: dict = {}     # prefix -> modes
        self.entries: dict = {}      # (kdev, ino) -> map value
        self.names: dict = {}        # (kdev, ino) -> the path it was found at
        self.dirs: tuple = ()        # watched directory paths ("/etc/")
        self.full = False            # the last scan stopped at max_entries
        self.stale = True
        self.last_scan = 0.0
        self.scans = 0

    # --- what is watched ---

    def set_prefixes(self, prefixes) -> None:
        """The open filter (None, a prefix list, or prefix -> modes)."""
        if prefixes is None:
            self.prefixes = {}
        elif isinstance(prefixes, dict):
            self.prefixes = {p: int(m) & OPEN_WANT_ALL for p, m in prefixes.items()}
        else:
            self.prefixes = {p: OPEN_WANT_ALL for p in prefixes}
        self.stale = True

    def scan(self, now: Optional[float] = None) -> dict:
        """Stat what the prefixes name; returns the map entries
        {(kdev, ino): value}.  now: time.monotonic() of the scan."""
        self.entries, self.names, self.full = {}, {}, False
        dirs = []
        # exact files first, then the trees breadth first, so the entries most
        # rules name are in when the budget runs out
        trees = []
        for prefix, modes in sorted(self.prefixes.items(), key=lambda pm: len(pm[0])):
            if not modes or not prefix.startswith("/") or prefix == "/":
                continue
            for path, st in self._covered(prefix):
                if _stat.S_ISDIR(st.st_mode):
                    trees.append((path, st, modes))
                    dirs.append(path.rstrip("/") + "/")
                elif _stat.S_ISREG(st.st_mode):
                    self._add(path, st, modes)
        queue = list(trees)
        while queue and not self.full:
            path, st, modes = queue.pop(0)
            self._add(path, st, modes << WATCH_CHILD_SHIFT)
            try:
                with os.scandir(path) as it:
                    for ent in it:
                        try:
                            if ent.is_dir(follow_symlinks=False):
                                queue.append((ent.path, ent.stat(follow_symlinks=False), modes))
                            elif ent.is_file(follow_symlinks=False):
                                self._add(ent.path, ent.stat(follow_symlinks=False), modes)
                        except OSError:
                            continue
                        if self.full:
                            break
            except OSError:
                continue
        if self.full:
            log.warning("watched files: more than %d files and directories below the rules' "
                        "paths; the rest is judged by path only", self.max_entries)
        self.dirs = tuple(sorted(set(dirs)))
        self.stale = False
        self.last_scan = time.monotonic() if now is None else now
        self.scans += 1
        return self.entries

    def _covered(self, prefix: str):
        """(path, lstat) of what exists on this host and starts with prefix."""
        if prefix.endswith("/"):
            d = prefix.rstrip("/") or "/"
            try:
                st = os.lstat(d)
            except OSError:
                return
            if _stat.S_ISDIR(st.st_mode):
                yield d, st
            return
        parent, base = os.path.split(prefix)
        try:
            with os.scandir(parent or "/") as it:
                for ent in it:
                    if ent.name.startswith(base):
                        try:
                            yield ent.path, ent.stat(follow_symlinks=False)
                        except OSError:
                            pass
        except OSError:
            return

    def _add(self, path: str, st, value: int) -> None:
        key = (kernel_dev(st.st_dev), st.st_ino)
        if key not in self.entries and len(self.entries) >= self.max_entries:
            self.full = True
            return
        self.entries[key] = self.entries.get(key, 0) | value
        self.names.setdefault(key, path)

    # --- keeping it current ---

    def note_event(self, ev) -> None:
        """A rename/link/unlink/mkdir event: stale if it touched a watched tree
        or a watched file's name."""
        if self.stale or not self.prefixes:
            return
        for p in (ev.path, ev.path2):
            if p and (p.startswith(self.dirs) or any(p.startswith(x) for x in self.prefixes)):
                self.stale = True
                return

    def due(self, now: float) -> bool:
        """Time for a fresh scan?"""
        if not self.prefixes:
            return False
        elapsed = now - self.last_scan
        return elapsed >= RESCAN_S or (self.stale and elapsed >= MIN_RESCAN_S)

    # --- naming what the kernel recognised ---

    def name_of(self, kdev: int, ino: int, watched: int, path: Optional[str]) -> Optional[str]:
        """The rules' path of a file the kernel recognised: the watched file's
        own path, or for a file in a watched directory that directory's path
        and the file's name."""
        name = self.names.get((kdev, ino))
        if name is None:
            return None
        if watched == WATCHED_DIR:
            base = path.rstrip("/").rsplit("/", 1)[-1] if path else ""
            return (name.rstrip("/") + "/" + base) if base else None
        return name


__all__ = ["WatchedFiles", "inode_key", "watch_bits", "watch_hash"]
