"""Cgroup v2 id <-> path, from the mounted hierarchy.

A cgroup v2 id (what ``bpf_get_current_cgroup_id()`` returns) is the inode
number of the cgroup's directory in the v2 hierarchy.  We walk the hierarchy
once to build inode -> path, keep it, and walk again on a miss at most every
``refresh_interval`` seconds.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator, Optional

from vigil.state.containers.cgroup import normalize_path, pick_path
from vigil.host_paths import proc_path

DEFAULT_PROC = None     # the host's procfs: vigil.host_paths.proc_path()


def find_v2_mount(mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where the cgroup2 hierarchy is mounted: ``/sys/fs/cgroup`` on unified hosts,
    ``/sys/fs/cgroup/unified`` on hybrid ones, else whatever mountinfo says."""
    found = []
    try:
        with open(mountinfo) as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                if not sep:
                    continue
                fstype = right.split(" ", 1)[0]
                if fstype != "cgroup2":
                    continue
                fields = left.split()
                if len(fields) >= 5 and fields[3] == "/":
                    found.append(_unescape(fields[4]))
    except OSError:
        pass
    for pref in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if pref in found:
            return pref
    if found:
        return found[0]
    for pref in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(pref, "cgroup.controllers")):
            return pref
    return None


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def read_proc_cgroup(pid: int, proc: Optional[str] = DEFAULT_PROC) -> Optional[str]:
    try:
        with open(f"{proc or proc_path()}/{int(pid)}/cgroup") as f:
            return f.read()
    except (OSError, ValueError, TypeError):
        return None


class CgroupFS:
    """The cgroup v2 hierarchy: inode (cgroup id) -> path relative to the mount."""

    def __init__(self, root: Optional[str] = None, refresh_interval: float = 0.5,
                 proc: Optional[str] = DEFAULT_PROC, clock=time.monotonic):
        self.root = root if root is not None else find_v2_mount()
        self.refresh_interval = refresh_interval
        self.proc = proc
        self._clock = clock
        self._by_id: dict = {}
        self._by_path: dict = {}
        self._last_walk = float("-inf")
        self._lock = threading.Lock()
        self.walks = 0

    @property
    def available(self) -> bool:
        return bool(self.root) and os.path.isdir(self.root)

    # --- walking -------------------------------------------------------------------------
    def walk(self) -> Iterator[tuple]:
        """Yield (cgroup id, relative path) for every cgroup under the v2 mount."""
        if not self.root:
            return
        try:
            st = os.stat(self.root)
        except OSError:
            return
        yield st.st_ino, "/"
        stack = [(self.root, "")]
        while stack:
            abs_dir, rel = stack.pop()
            try:
                it = os.scandir(abs_dir)
            except OSError:
                continue
            with it:
                for de in it:
                    try:
                        if not de.is_dir(follow_symlinks=False):
                            continue
                        ino = de.inode()
                    except OSError:
                        continue
                    rp = f"{rel}/{de.name}"
                    yield ino, rp
                    stack.append((de.path, rp))

    def refresh(self) -> int:
        """Rebuild the map now; returns the number of cgroups seen."""
        by_id, by_path = {}, {}
        for ino, rel in self.walk():
            by_id[ino] = rel
            by_path[rel] = ino
        with self._lock:
            self._by_id = by_id
            self._by_path = by_path
            self._last_walk = self._clock()
            self.walks += 1
        return len(by_id)

    def maybe_refresh(self) -> bool:
        """Walk again unless we walked less than ``refresh_interval`` ago."""
        if self._clock() - self._last_walk < self.refresh_interval:
            return False
        self.refresh()
        return True

    # --- lookups ---------------------------------------------------------------------------
    def cached_path(self, cgroup_id: int) -> Optional[str]:
        """No I/O: what the last walk (or ``learn``) knew."""
        return self._by_id.get(cgroup_id)

    def path_for_id(self, cgroup_id: int, refresh: bool = True) -> Optional[str]:
        p = self._by_id.get(cgroup_id)
        if p is None and refresh and self.maybe_refresh():
            p = self._by_id.get(cgroup_id)
        return p

    def id_for_path(self, path: str) -> Optional[int]:
        """The cgroup id of a path (relative to the v2 mount), by stat."""
        if not self.root or not isinstance(path, str):
            return None
        rel = normalize_path(path)
        try:
            ino = os.stat(self.root + (rel if rel != "/" else "")).st_ino
        except OSError:
            return self._by_path.get(rel)
        self.learn(ino, rel)
        return ino

    def learn(self, cgroup_id: int, path: str) -> None:
        """Record a mapping learnt elsewhere (a cgroup_mkdir event)."""
        with self._lock:
            self._by_id[cgroup_id] = path
            self._by_path[path] = cgroup_id

    def forget(self, cgroup_id: int) -> None:
        with self._lock:
            p = self._by_id.pop(cgroup_id, None)
            if p is not None and self._by_path.get(p) == cgroup_id:
                del self._by_path[p]

    def path_for_pid(self, pid: int) -> Optional[str]:
        """The cgroup path of a live process from /proc/<pid>/cgroup: the ``0::`` line,
        falling back to the v1 lines (hybrid hosts that only use v1 for containers)."""
        text = read_proc_cgroup(pid, self.proc)
        if text is None:
            return None
        return pick_path(text)

    def __len__(self) -> int:
        return len(self._by_id)
