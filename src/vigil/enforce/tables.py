"""The enforcement maps (kernel/bpf/enforce.h) and how policy sets get into
them without a moment where a workload is half enforced.

A policy set is written under a new ident before any cgroup points at it,
and its entries are removed only once no cgroup (in either half) does.  A
reload fills the inactive half of every cgroup's slots and of the host
slots, then flips ``enf_state.gen``; the kernel reads gen once per decision.
One cgroup learnt later gets both halves at once (one map update)."""
from __future__ import annotations

import ctypes
import logging
import os
import struct
import threading
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64

from vigil.events.structs import COMM_LEN, PATH_LEN

log = logging.getLogger("vigil.enforce")

RANGES = 16
POLICY_DEFAULT = 0xFFFF


class EnfState(ctypes.Structure):
    _fields_ = [("gen", c_uint32), ("vigil_tgid", c_uint32), ("hold_until", c_uint64),
                ("host_ident", (c_uint32 * 2) * 2), ("procs", c_uint32), ("files", c_uint32)]


class EnfCgroup(ctypes.Structure):
    _fields_ = [("ident", (c_uint32 * 2) * 2)]


class EnfIdent(ctypes.Structure):
    _fields_ = [("flags", c_uint32), ("default_policy", c_uint16), ("_pad", c_uint16)]


class EnfNetKey(ctypes.Structure):
    _fields_ = [("prefixlen", c_uint32), ("ident", c_uint32), ("direction", c_uint8),
                ("list", c_uint8), ("family", c_uint8), ("proc", c_uint8),
                ("addr", c_uint8 * 16)]


class EnfRange(ctypes.Structure):
    _fields_ = [("lo", c_uint16), ("hi", c_uint16), ("proto", c_uint8), ("_pad", c_uint8),
                ("policy", c_uint16)]


class EnfPorts(ctypes.Structure):
    _fields_ = [("n", c_uint32), ("r", EnfRange * RANGES)]


class EnfExecKey(ctypes.Structure):
    _fields_ = [("ident", c_uint32), ("what", c_uint32), ("s", c_char * PATH_LEN)]


class EnfFileKey(ctypes.Structure):
    _fields_ = [("ident", c_uint32), ("dev", c_uint32), ("ino", c_uint64)]


class EnfFile(ctypes.Structure):
    _fields_ = [("policy", c_uint16), ("modes", c_uint8), ("_pad", c_uint8)]


class EnfTag(ctypes.Structure):
    _fields_ = [("name", c_uint8), ("path", c_uint8), ("_pad", c_uint8 * 6)]


class EnfFlowKey(ctypes.Structure):
    _fields_ = [("cgroup", c_uint64), ("ident", c_uint32), ("port", c_uint16),
                ("direction", c_uint8), ("verdict", c_uint8), ("family", c_uint8),
                ("proto", c_uint8), ("policy", c_uint16), ("addr", c_uint8 * 16)]


class EnfFlow(ctypes.Structure):
    _fields_ = [("last", c_uint64), ("repeats", c_uint32), ("_pad", c_uint32)]


MIRRORS = {"enf_state": EnfState, "enf_cgroup": EnfCgroup, "enf_ident": EnfIdent,
           "enf_net_key": EnfNetKey, "enf_range": EnfRange, "enf_ports": EnfPorts,
           "enf_exec_key": EnfExecKey, "enf_flow_key": EnfFlowKey, "enf_flow": EnfFlow,
           "enf_tag": EnfTag, "enf_file_key": EnfFileKey, "enf_file": EnfFile}
MAPS = ("enf_state", "enf_cgroups", "enf_idents", "enf_nets", "enf_execs", "enf_protected",
        "enf_held", "enf_flows", "enf_udp", "enf_procs", "enf_tags", "enf_files")
ZERO = struct.pack("<I", 0)


def net_key(ident: int, entry, proc: int = 0) -> bytes:
    (direction, lst, family, packed, plen) = entry
    k = EnfNetKey(prefixlen=64 + plen, ident=ident, direction=direction, list=lst, family=family,
                  proc=proc)
    ctypes.memmove(k.addr, packed, len(packed))
    return bytes(k)


def ports_value(ranges) -> bytes:
    v = EnfPorts(n=len(ranges))
    for i, (lo, hi, proto, policy) in enumerate(ranges):
        v.r[i] = EnfRange(lo=lo, hi=hi, proto=proto, policy=policy)
    return bytes(v)


def exec_key(ident: int, what: int, text: str) -> bytes:
    return bytes(EnfExecKey(ident=ident, what=what, s=text.encode()[:PATH_LEN - 1]))


def file_identity(path: str):
    """(kernel dev, ino) of a file as this host sees it (symlinks followed: a
    denied path names what it reaches); None when it does not exist."""
    from vigil.events.decode import kernel_dev
    from vigil.host_paths import host_path
    try:
        st = os.stat(host_path(path))
    except OSError:
        return None
    return kernel_dev(st.st_dev), st.st_ino


class Tables:
    """Writes policy sets and cgroup assignments into the maps (``maps``:
    name -> vigil.kernel.libbpf.Map).  Thread-safe."""

    def __init__(self, maps: dict):
        self.maps = maps
        self.lock = threading.RLock()
        self.ids: dict = {}        # PolicySet -> ident
        self.sets: dict = {}       # ident -> PolicySet (kept after release, for reports)
        self._written: dict = {}   # ident -> [(map name, key)]
        self._files: dict = {}     # ident -> {(path, modes, policy): (dev, ino) or None}
        self.cgroups: dict = {}    # cgroup id -> (enforce ident, audit ident)
        self.host = (0, 0)
        self._next = 1
        self.state = EnfState()

    # --- policy sets ---

    def ident(self, pset) -> int:
        """The ident of a set (written now if new); 0 for None."""
        if pset is None:
            return 0
        i = self.ids.get(pset)
        if i is not None:
            return i
        i = self._next
        self._next += 1
        written = []
        nets, execs = self.maps["enf_nets"], self.maps["enf_execs"]
        for entry, ranges in pset.nets:
            k = net_key(i, entry)
            nets.update(k, ports_value(ranges))
            written.append(("enf_nets", k))
        for (proc, entry), ranges in pset.proc_nets:
            k = net_key(i, entry, proc)
            nets.update(k, ports_value(ranges))
            written.append(("enf_nets", k))
        for (what, text), policy in pset.execs:
            k = exec_key(i, what, text)
            execs.update(k, struct.pack("<H", policy))
            written.append(("enf_execs", k))
        files = {(path, modes, policy): None for (path, modes), policy in pset.files}
        if files:
            self._files[i] = files
            self._write_files(i)
        self.maps["enf_idents"].update(struct.pack("<I", i),
                                       bytes(EnfIdent(pset.flags, POLICY_DEFAULT)))
        self.ids[pset] = i
        self.sets[i] = pset
        self._written[i] = written
        return i

    # --- denied files (by identity, refreshed when a file is replaced) ---

    def _write_files(self, i: int) -> bool:
        """(Re)write ident i's file entries from what the paths name now;
        True when an identity changed.  The new entry goes in before the old
        one goes, so a replaced file is never uncovered by vigil."""
        m = self.maps["enf_files"]
        files = self._files[i]
        changed = False
        for (path, modes, policy), old in list(files.items()):
            new = file_identity(path)
            if new == old:
                continue
            changed = True
            if new is not None:
                m.update(bytes(EnfFileKey(i, new[0], new[1])), bytes(EnfFile(policy, modes)))
            if old is not None and all(v != old for k, v in files.items()
                                       if k[0] != path):
                m.delete(bytes(EnfFileKey(i, old[0], old[1])))
            if new is None:
                log.warning("file deny %s: no such file on this host (nothing to deny until it "
                            "exists)", path)
            files[(path, modes, policy)] = new
        if not self.state.files:
            self.state.files = 1
            self.write_state()
        return changed

    def refresh_files(self) -> bool:
        """Stat every denied path again (a file replaced by rename, created
        later); True when some identity changed."""
        with self.lock:
            return any([self._write_files(i) for i in list(self._files)])

    def file_paths(self) -> dict:
        """(dev, ino) -> path of the denied files, as last resolved."""
        with self.lock:
            return {v: k[0] for files in self._files.values() for k, v in files.items() if v}

    def _release_unused(self) -> None:
        used = {0, *self.host}
        for pair in self.cgroups.values():
            used.update(pair)
        for pset, i in list(self.ids.items()):
            if i in used:
                continue
            for name, k in self._written.pop(i, ()):
                self.maps[name].delete(k)
            for (_path, _modes, _pol), ident in self._files.pop(i, {}).items():
                if ident is not None:
                    self.maps["enf_files"].delete(bytes(EnfFileKey(i, ident[0], ident[1])))
            self.maps["enf_idents"].delete(struct.pack("<I", i))
            del self.ids[pset]

    # --- state ---

    def write_state(self) -> None:
        self.maps["enf_state"].update(ZERO, bytes(self.state))

    def set_vigil(self, tgid: int) -> None:
        with self.lock:
            self.state.vigil_tgid = tgid
            self.write_state()

    def set_hold_until(self, boot_ns: int) -> None:
        with self.lock:
            self.state.hold_until = boot_ns
            self.write_state()

    def _cg_value(self, live, other) -> bytes:
        v = EnfCgroup()
        g = self.state.gen
        v.ident[g][0], v.ident[g][1] = live
        v.ident[1 - g][0], v.ident[1 - g][1] = other
        return bytes(v)

    # --- assignments ---

    def assign(self, cgroup_id: int, sets) -> None:
        """One cgroup's (enforce set, audit set), both halves at once."""
        with self.lock:
            pair = (self.ident(sets[0]), self.ident(sets[1]))
            self.maps["enf_cgroups"].update(struct.pack("<Q", cgroup_id),
                                            self._cg_value(pair, pair))
            self.cgroups[cgroup_id] = pair
            self._release_unused()

    def forget(self, cgroup_id: int) -> None:
        with self.lock:
            if self.cgroups.pop(cgroup_id, None) is not None:
                self.maps["enf_cgroups"].delete(struct.pack("<Q", cgroup_id))
                self._release_unused()

    def replace_all(self, assignments: dict, host) -> None:
        """Every cgroup's sets and the host's, switched at one instant."""
        with self.lock:
            new = {cg: (self.ident(s[0]), self.ident(s[1])) for cg, s in assignments.items()}
            new_host = (self.ident(host[0]), self.ident(host[1]))
            cgm = self.maps["enf_cgroups"]
            g = self.state.gen
            # 1. the inactive half of every slot (a new cgroup gets the new sets in both)
            for cg, pair in new.items():
                old = self.cgroups.get(cg, pair)
                v = EnfCgroup()
                v.ident[g][0], v.ident[g][1] = old
                v.ident[1 - g][0], v.ident[1 - g][1] = pair
                cgm.update(struct.pack("<Q", cg), bytes(v))
            self.state.host_ident[1 - g][0], self.state.host_ident[1 - g][1] = new_host
            self.write_state()
            # 2. the switch
            self.state.gen = 1 - g
            self.write_state()
            # 3. both halves the same again; cgroups gone are dropped
            for cg, pair in new.items():
                cgm.update(struct.pack("<Q", cg), self._cg_value(pair, pair))
            for cg in set(self.cgroups) - set(new):
                cgm.delete(struct.pack("<Q", cg))
            self.state.host_ident[g][0], self.state.host_ident[g][1] = new_host
            self.write_state()
            self.cgroups = new
            self.host = new_host
            self._release_unused()

    def set_procs(self, classes: dict) -> None:
        """Process classes ({(EXEC_NAME|EXEC_PATH, text): class}) for the exec
        tagging; written before any set that names them, never removed (a
        class number is never reused: running processes keep their tags)."""
        with self.lock:
            m = self.maps["enf_procs"]
            for (what, text), cls in classes.items():
                m.update(exec_key(0, what, text), bytes([cls]))
            if classes and not self.state.procs:
                self.state.procs = 1
                self.write_state()

    # --- protected process names, held processes ---

    def set_protected(self, names) -> None:
        m = self.maps["enf_protected"]
        m.clear()
        for n in names:
            m.update(n.encode()[:COMM_LEN - 1].ljust(COMM_LEN, b"\0"), b"\x01")

    def release_held(self, pid: int) -> None:
        self.maps["enf_held"].delete(struct.pack("<I", pid))

    def take_folded(self, older_than_ns: int) -> list:
        """(flow key, repeats) of flows whose denials were only counted and
        whose last event is older than ``older_than_ns`` (boot ns); forgotten, so
        the flow's next denial is reported at once."""
        m = self.maps["enf_flows"]
        out = []
        for k, v in list(m.items()):
            f = EnfFlow.from_buffer_copy(v)
            if f.last < older_than_ns:
                m.delete(k)
                if f.repeats:
                    out.append((EnfFlowKey.from_buffer_copy(k), f.repeats))
        return out

    def entries(self) -> int:
        with self.lock:
            return (sum(len(w) for w in self._written.values())
                    + sum(len(f) for f in self._files.values()))


__all__ = ["Tables", "MIRRORS", "MAPS", "EnfState", "EnfCgroup", "POLICY_DEFAULT"]
