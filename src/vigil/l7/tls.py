"""TLS in plaintext: uprobes on OpenSSL's SSL_read/SSL_write (libssl.so.3).

The kernel side is ``kernel/bpf/tls.bpf.c``: its programs mark the thread
"inside SSL_*" at a function's entry; the L7 sensor's read/write programs,
seeing a followed socket written or read by a marked thread, note the socket's
fd there and do not look at those (encrypted) bytes; at the function's return
the plaintext (the buffer written, or what the read filled) goes to the L7
detector with that fd and ``L7_F_TLS``, and is paired like any plaintext.
The probes go on OpenSSL 3's ssl_read_internal/ssl_write_internal when they
can be found (every read and write form passes there, and their first
instruction is emulated by the kernel, not single-stepped), else on the
exported SSL_read/SSL_write/SSL_read_ex/SSL_write_ex.

Here: attaching those programs once per distinct library file (device and
inode, ``tls_libs``), the host's copy at start and those processes map (a
container's own copy): every process at start, then each process that execs
(checked a few times while it loads its libraries, as Python loads libssl
only at ``import ssl``), and every process again now and then.  Bounded: at
most ``max_libs`` files, ``per_namespace`` of them from one mount namespace,
so one container cannot use up the slots of the others.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from typing import Optional

from vigil.kernel import libbpf
from vigil.kernel.detach import detach_all, release_later
from vigil.l7 import tls_libs
from vigil.l7.tls_libs import TlsLib

log = logging.getLogger("vigil.l7.tls")

# (function, entry program, return program, required): the library is in use
# once the required ones are attached; the others are attached if it has them
EXPORTED = (
    ("SSL_write", "l7__tls_write", "l7__tls_write_ret", True),
    ("SSL_read", "l7__tls_read", "l7__tls_read_ret", True),
    ("SSL_write_ex", "l7__tls_write_ex", "l7__tls_write_ret_ex", False),
    ("SSL_read_ex", "l7__tls_read_ex", "l7__tls_read_ret_ex", False),
)
# where every data call goes through (tls_libs.internal_calls), with SSL_*_ex's
# arguments: probed there when found, instead of EXPORTED
INTERNAL = (
    ("ssl_write_internal", "l7__tls_write_ex", "l7__tls_write_ret_ex", True),
    ("ssl_read_internal", "l7__tls_read_ex", "l7__tls_read_ret_ex", True),
)
# the handshake and the close alert: marked too, so their encrypted bytes are
# not parsed and the fd of the SSL object is known before any data
MARKS = (
    ("SSL_do_handshake", "l7__tls_other", "l7__tls_other_ret", False),
    ("SSL_shutdown", "l7__tls_other", "l7__tls_other_ret", False),
)
PROGRAMS = tuple(sorted({p for f, a, b, _ in EXPORTED + INTERNAL + MARKS for p in (a, b)}))

EXEC_CHECKS = (0.02, 0.25, 1.5)     # s after an exec: look at the process's libraries
RESCAN_SECONDS = 60.0              # every process again
PENDING_MAX = 4096                 # execs waiting for a check (the oldest dropped)
CHECKS_PER_TICK = 64               # maps files read per tick
REFUSED_MAX = 4096                 # library files remembered as not probed
# attach errors no other library would escape: uprobes are off for the node
NODE_WIDE = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES)


class TlsProbes:
    """The uprobes of one loaded object with tls.bpf.c's programs."""

    def __init__(self, obj: libbpf.BpfObject, max_libs: int = 32, per_namespace: int = 4):
        self.obj = obj
        self.programs = {p.name: p for p in obj.programs() if p.name in PROGRAMS}
        self.max_libs = max_libs
        self.per_namespace = per_namespace
        self.libs: dict = {}          # key -> TlsLib attached
        self.links: list = []
        self.refused: dict = {}       # keys that failed (not tried again), oldest first
        self.disabled = ""            # why uprobes cannot be used at all
        self._by_ns: dict = {}        # mount namespace -> keys attached from it
        self._real: dict = {}         # identity in /proc/PID/maps -> the real file's
        self._pending: dict = {}      # pid -> [times of the checks left]
        self._next_scan = 0.0
        self._scan = None             # the periodic pass over every process, under way
        self._full_logged = False
        self.checks = 0               # processes looked at (stats)

    # --- attaching ---

    def add(self, lib: TlsLib) -> bool:
        """Attach to ``lib`` unless its file already is (or failed, or the
        bounds are reached); True if it is attached now."""
        if self.disabled:
            return False
        seen_as = lib.key                     # as /proc/PID/maps shows it
        real = self._real.get(seen_as)
        if real is None:
            real = tls_libs.resolve(lib).key
            if len(self._real) >= REFUSED_MAX:
                self._real.pop(next(iter(self._real)))
            self._real[seen_as] = real
        if real != lib.key:
            lib = dataclasses.replace(lib, key=real)
        if lib.key in self.libs or lib.key in self.refused:
            return lib.key in self.libs
        if len(self.libs) >= self.max_libs or (
                lib.mntns and len(self._by_ns.get(lib.mntns, ())) >= self.per_namespace):
            if not self._full_logged:
                log.warning("TLS: not probing %s: at most %d libraries (%d per mount namespace) "
                            "are probed; its HTTPS traffic is not seen", lib.describe(),
                            self.max_libs, self.per_namespace)
                self._full_logged = True
            self._refuse(lib.key)
            return False
        try:
            offsets = tls_libs.function_offsets(lib.path, {f for f, *_ in EXPORTED + MARKS})
        except (OSError, ValueError) as e:
            self._failed(lib, "", e, [])
            return False
        inner = tls_libs.internal_calls(lib.path, offsets)
        offsets.update(inner)
        plan = (INTERNAL if inner else EXPORTED) + MARKS
        links, missing = [], []
        for func, entry, ret, required in plan:
            got = []
            try:
                if func not in offsets:
                    raise LookupError(f"{func} is not defined there")
                off = offsets[func]
                got.append(self.programs[entry].attach_uprobe_at(lib.path, off))
                got.append(self.programs[ret].attach_uprobe_at(lib.path, off, retprobe=True))
            except (LookupError, libbpf.BpfError) as e:
                self._release(got)
                if required:
                    self._failed(lib, func, e, links)
                    return False
                missing.append(func)
                continue
            links.extend(got)
        self.libs[lib.key] = lib
        self.links.extend(links)
        if lib.mntns:
            self._by_ns.setdefault(lib.mntns, set()).add(lib.key)
        log.info("TLS: probing %s at %s%s", lib.describe(),
                 "ssl_read_internal/ssl_write_internal" if inner else "SSL_read/SSL_write",
                 f" (not {', '.join(missing)})" if missing else "")
        return True

    def _refuse(self, key) -> None:
        if len(self.refused) >= REFUSED_MAX:
            self.refused.pop(next(iter(self.refused)))
        self.refused[key] = True

    @staticmethod
    def _release(links) -> None:
        release_later([fd for fd in detach_all(links) if fd is not None])

    def _failed(self, lib: TlsLib, func: str, err, links) -> None:
        self._release(links)
        self._refuse(lib.key)
        if isinstance(err, KeyError):
            why = f"no program {err} in the object"
        elif isinstance(err, libbpf.BpfError):
            why = err.details or err.strerror
            if err.errno in NODE_WIDE or not os.path.exists(libbpf._UPROBE_PMU):
                # a reason every other library would fail for too
                self.disabled = f"{func}: {why}"
                log.warning("TLS: uprobes unavailable (%s); HTTPS is not seen in plaintext, "
                            "plaintext L7 is unaffected", self.disabled)
                return
        else:
            why = str(err)
        log.warning("TLS: cannot probe %s (%s%s); its HTTPS traffic is not seen", lib.describe(),
                    f"{func}: " if func else "", why)

    # --- finding libraries ---

    def start(self, now: Optional[float] = None) -> "TlsProbes":
        """The host's library, then every process's."""
        host = tls_libs.host_lib()
        if host is not None:
            self.add(host)
        self.rescan(now)
        return self

    def rescan(self, now: Optional[float] = None) -> None:
        """Every process now (at start)."""
        now = time.monotonic() if now is None else now
        self._next_scan = now + RESCAN_SECONDS
        for pid in tls_libs.pids():
            if self.disabled:
                return
            self.check_pid(pid)

    def check_pid(self, pid: int) -> None:
        self.checks += 1
        for lib in tls_libs.process_libs(pid):
            self.add(lib)

    def on_exec(self, pid: int, now: Optional[float] = None) -> None:
        """A process exec'd: look at what it maps a few times while it starts."""
        if self.disabled:
            return
        now = time.monotonic() if now is None else now
        if len(self._pending) >= PENDING_MAX:
            self._pending.pop(next(iter(self._pending)))
        self._pending.pop(pid, None)
        self._pending[pid] = [now + d for d in EXEC_CHECKS]

    def tick(self, now: Optional[float] = None) -> None:
        """Run the checks that are due (call often, from the event loop)."""
        if self.disabled:
            return
        now = time.monotonic() if now is None else now
        done = 0
        if self._scan is None and now >= self._next_scan:
            self._scan = tls_libs.pids()        # every process again, a few a tick
            self._next_scan = now + RESCAN_SECONDS
        if self._scan is not None:
            for pid in self._scan:
                self.check_pid(pid)
                done += 1
                if done >= CHECKS_PER_TICK // 2:
                    break
            else:
                self._scan = None
        for pid in list(self._pending):
            times = self._pending[pid]
            if times[0] > now:
                continue
            if done >= CHECKS_PER_TICK:
                break
            done += 1
            times.pop(0)
            if not times:
                del self._pending[pid]
            self.check_pid(pid)

    def close(self) -> None:
        # each uprobe's removal waits for the kernel: done by a helper process
        self._release(self.links)
        self.links = []
        self.libs = {}
        self._by_ns = {}
        self._pending = {}

    def stats(self) -> dict:
        return {"libraries": len(self.libs), "refused": len(self.refused),
                "links": len(self.links), "checks": self.checks, "disabled": self.disabled}
