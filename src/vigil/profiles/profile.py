"""One workload's learned behaviour: what it executes, opens, reaches, listens on.

A profile is ``learning`` until its window is over (or ``vigil profiles lock``),
then ``locked``: only then do deviations alert.  ``partial`` says why a window
could not see everything (the workload was running before learning began,
the kernel dropped events); a window that ends partial starts the next one
(keeping what was learned) instead of locking, and the profile completes on
the first clean window.

Values (see vigil.profiles.observe for how events become them):

=========  ==========================================  =============
category   value                                       alerts
=========  ==========================================  =============
exec       (path, argument shape)                      new path
file       folded path (vigil.profiles.shapes)         not covered
egress     (address, port, protocol)                   new peer
dns        query name                                  new name
listen     (port, protocol)                            new port
ingress    (peer address, local port, protocol)        never (policy)
caps       effective capability bit                    never
syscall    syscall name                                never
=========  ==========================================  =============
"""
from __future__ import annotations

from typing import Optional

from vigil.profiles.shapes import covered, parent_dir

LEARNING, LOCKED = "learning", "locked"
SHAPES_PER_EXEC = 32
CATEGORIES = ("exec", "file", "egress", "dns", "listen", "ingress", "caps", "syscall")
ALERTED = ("exec", "file", "egress", "dns", "listen")


class Profile:
    __slots__ = ("workload", "kind", "namespace", "container", "image", "labels", "status",
                 "partial", "history", "window", "window_start", "locked_at", "created",
                 "replicas", "execs", "files", "prefixes", "egress", "dns", "listen", "ingress",
                 "caps", "syscalls", "overflow", "dirty", "_children", "_roots")

    def __init__(self, workload: str, kind: str = "workload", *, namespace: str = "",
                 container: str = "", image: str = "", labels: Optional[dict] = None,
                 window: float = 86400.0, now_ns: int = 0):
        self.workload = workload
        self.kind = kind
        self.namespace = namespace
        self.container = container
        self.image = image
        self.labels = dict(labels) if labels is not None else None   # None: none seen yet
        self.status = LEARNING
        self.partial = ""          # why the current window is partial ("" = clean)
        self.history: list = []    # [(time ns, note)]
        self.window = float(window)
        self.window_start = int(now_ns)
        self.locked_at = 0
        self.created = int(now_ns)
        self.replicas: set = set()     # container ids seen (capped)
        self.execs: dict = {}      # path -> set of argument shapes
        self.files: set = set()    # folded paths
        self.prefixes: set = set()  # folded directories ("dir/"): anything below
        self.egress: set = set()
        self.dns: set = set()
        self.listen: set = set()
        self.ingress: set = set()
        self.caps = 0
        self.syscalls: set = set()
        self.overflow: set = set()     # categories that outgrew max_entries: never alerted
        self.dirty = True
        self._children: dict = {}  # directory -> learned entries right below it
        self._roots: tuple = ()

    # --- state ---

    @property
    def locked(self) -> bool:
        return self.status == LOCKED

    def window_over(self, now_ns: int) -> bool:
        return self.status == LEARNING and now_ns >= self.window_start + self.window * 1e9

    def mark_partial(self, reason: str) -> None:
        if self.status == LEARNING and reason not in self.partial:
            self.partial = f"{self.partial}; {reason}" if self.partial else reason
            self.dirty = True

    def end_window(self, now_ns: int) -> None:
        """The window is over: lock if it was clean, else learn one more window."""
        if self.partial:
            self.history.append((now_ns, f"window partial ({self.partial}): learning again"))
            self.partial = ""
            self.window_start = now_ns
        else:
            self.lock(now_ns, "window complete")
        self.dirty = True

    def lock(self, now_ns: int, note: str = "locked") -> None:
        if self.partial:
            note += f" while partial ({self.partial})"
        self.status = LOCKED
        self.locked_at = now_ns
        self.history.append((now_ns, note))
        self.dirty = True

    def relearn(self, now_ns: int, window: Optional[float] = None) -> None:
        """Learn again from now (keeping what is known), for ``window`` seconds."""
        self.status = LEARNING
        self.partial = ""
        self.window_start = now_ns
        if window is not None:
            self.window = float(window)
        self.history.append((now_ns, f"learning for {self.window:g}s"))
        self.dirty = True

    def note_replica(self, container_id: str, labels: Optional[dict]) -> None:
        if container_id in self.replicas or len(self.replicas) >= 64:
            return
        self.replicas.add(container_id)
        if labels is not None:
            # the labels every replica has: what a policy may select on
            self.labels = dict(labels) if self.labels is None else \
                {k: v for k, v in self.labels.items() if labels.get(k) == v}
        self.dirty = True

    def entries(self) -> int:
        return (len(self.execs) + len(self.files) + len(self.prefixes) + len(self.egress)
                + len(self.dns) + len(self.listen) + len(self.ingress))

    # --- learning and checking ---

    def set_roots(self, roots) -> None:
        """The profiling prefixes: never folded into a prefix themselves."""
        self._roots = tuple(r.rstrip("/") + "/" for r in roots)

    def knows(self, category: str, value) -> bool:
        if category == "exec":
            return value[0] in self.execs
        if category == "file":
            return covered(value, self.files, self.prefixes)
        if category in self.overflow:
            return True
        if category == "egress":
            return value in self.egress
        if category == "dns":
            return value in self.dns
        if category == "listen":
            return value in self.listen
        return True

    def learn(self, category: str, value, max_entries: int, fold_after: int) -> None:
        if category == "caps":
            if not self.caps & value:
                self.caps |= value
                self.dirty = True
            return
        if category == "exec":
            path, shape = value
            shapes = self.execs.get(path)
            if shapes is None:
                if self._full("exec", len(self.execs), max_entries):
                    return
                shapes = self.execs[path] = set()
            if shape not in shapes and len(shapes) < SHAPES_PER_EXEC:
                shapes.add(shape)
                self.dirty = True
            return
        if category == "file":
            self._learn_file(value, max_entries, fold_after)
            return
        target = {"egress": self.egress, "dns": self.dns, "listen": self.listen,
                  "ingress": self.ingress, "syscall": self.syscalls}[category]
        if value not in target and not self._full(category, len(target), max_entries):
            target.add(value)
            self.dirty = True

    def _full(self, category: str, n: int, max_entries: int) -> bool:
        if n < max_entries:
            return False
        if category not in self.overflow:
            self.overflow.add(category)
            self.dirty = True
        return True

    def _learn_file(self, folded: str, max_entries: int, fold_after: int) -> None:
        if covered(folded, self.files, self.prefixes):
            return
        if self._full("file", len(self.files) + len(self.prefixes), max_entries):
            return
        self.files.add(folded)
        self.dirty = True
        d = parent_dir(folded)
        n = self._children[d] = self._children.get(d, 0) + 1
        if n > fold_after and d not in self._roots and not any(
                r.startswith(d) for r in self._roots):
            self._fold(d)

    def _fold(self, d: str) -> None:
        """Directory d becomes a prefix: the entries below it go."""
        self.files = {f for f in self.files if not f.startswith(d)}
        self.prefixes = {p for p in self.prefixes if not p.startswith(d)}
        self.prefixes.add(d)
        for k in [k for k in self._children if k.startswith(d)]:
            del self._children[k]

    def rebuild_index(self) -> None:
        """After loading: the per-directory counts folding works from."""
        self._children = {}
        for f in self.files:
            d = parent_dir(f)
            self._children[d] = self._children.get(d, 0) + 1

    # --- plain data (store rows, YAML export) ---

    def to_dict(self) -> dict:
        return {
            "workload": self.workload, "kind": self.kind, "namespace": self.namespace,
            "container": self.container, "image": self.image,
            "labels": dict(sorted((self.labels or {}).items())),
            "status": self.status, "partial": self.partial,
            "window": self.window, "window_start": self.window_start,
            "locked_at": self.locked_at, "created": self.created,
            "replicas": len(self.replicas),
            "history": [{"time": t, "note": n} for t, n in self.history[-20:]],
            "overflow": sorted(self.overflow),
            "execs": [{"path": p, "args": sorted(s)} for p, s in sorted(self.execs.items())],
            "files": sorted(self.files),
            "prefixes": sorted(self.prefixes),
            "egress": [{"addr": a, "port": p, "protocol": pr}
                       for a, p, pr in sorted(self.egress)],
            "dns": sorted(self.dns),
            "listen": [{"port": p, "protocol": pr} for p, pr in sorted(self.listen)],
            "ingress": [{"addr": a, "port": p, "protocol": pr}
                        for a, p, pr in sorted(self.ingress)],
            "capabilities": self.caps,
            "syscalls": sorted(self.syscalls),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        """From :meth:`to_dict`'s form (checked by vigil.profiles.documents first)."""
        p = cls(d["workload"], d.get("kind", "workload"), namespace=d.get("namespace", ""),
                container=d.get("container", ""), image=d.get("image", ""),
                labels=d.get("labels"), window=d.get("window", 86400.0),
                now_ns=d.get("created", 0))
        p.status = d.get("status", LEARNING)
        p.partial = d.get("partial", "")
        p.window_start = int(d.get("window_start", 0))
        p.locked_at = int(d.get("locked_at", 0))
        p.history = [(int(h["time"]), str(h["note"])) for h in d.get("history", ())]
        p.overflow = set(d.get("overflow", ()))
        p.execs = {e["path"]: set(e.get("args", ())) for e in d.get("execs", ())}
        p.files = set(d.get("files", ()))
        p.prefixes = set(d.get("prefixes", ()))
        p.egress = {(e["addr"], int(e["port"]), e["protocol"]) for e in d.get("egress", ())}
        p.dns = set(d.get("dns", ()))
        p.listen = {(int(e["port"]), e["protocol"]) for e in d.get("listen", ())}
        p.ingress = {(e["addr"], int(e["port"]), e["protocol"]) for e in d.get("ingress", ())}
        p.caps = int(d.get("capabilities", 0))
        p.syscalls = set(d.get("syscalls", ()))
        p.rebuild_index()
        p.dirty = False
        return p

    def merge(self, other: "Profile") -> None:
        """Add what ``other`` learned (an imported profile of the same workload)."""
        for path, shapes in other.execs.items():
            self.execs.setdefault(path, set()).update(shapes)
        self.files |= other.files
        self.prefixes |= other.prefixes
        self.files = {f for f in self.files if not covered(f, (), self.prefixes)}
        for name in ("egress", "dns", "listen", "ingress", "syscalls", "overflow"):
            getattr(self, name).update(getattr(other, name))
        self.caps |= other.caps
        self.rebuild_index()
        self.dirty = True


__all__ = ["Profile", "LEARNING", "LOCKED", "CATEGORIES", "ALERTED"]
