"""The enforcement maps (kernel/bpf/enforce.h) and how policy sets get into
them without a moment where a workload is half enforced.

A policy set is written under a new ident before any cgroup points at it,
and its entries are removed only once no cgroup (in either half) does.  A
reload fills the inactive half of every cgroup's slots and of the host
slots, then flips ``enf_state.gen``; the kernel reads gen once per decision.
One cgroup learnt later gets both halves at once (one map update)."""
from __future__ import annotations

import ctypes
import struct
import threading
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64

from vigil.events.structs import COMM_LEN, PATH_LEN

RANGES = 16
POLICY_DEFAULT = 0xFFFF


class EnfState(ctypes.Structure):
    _fields_ = [("gen", c_uint32), ("vigil_tgid", c_uint32), ("hold_until", c_uint64),
                ("host_ident", (c_uint32 * 2) * 2), ("procs", c_uint32), ("_pad", c_uint32)]


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
           "enf_tag": EnfTag}
MAPS = ("enf_state", "enf_cgroups", "enf_idents", "enf_nets", "enf_execs", "enf_protected",
        "enf_held", "enf_flows", "enf_udp", "enf_procs", "enf_tags")
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


class Tables:
    """Writes policy sets and cgroup assignments into the maps (``maps``:
    name -> vigil.kernel.libbpf.Map).  Thread-safe."""

    def __init__(self, maps: dict):
        self.maps = maps
        self.lock = threading.RLock()
        self.ids: dict = {}        # PolicySet -> ident
        self.sets: dict = {}       # ident -> PolicySet (kept after release, for reports)
        self._written: dict = {}   # ident -> [(map name, key)]
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
        self.maps["enf_idents"].update(struct.pack("<I", i),
                                       bytes(EnfIdent(pset.flags, POLICY_DEFAULT)))
        self.ids[pset] = i
        self.sets[i] = pset
        self._written[i] = written
        return i

    def _release_unused(self) -> None:
        used = {0, *self.host}
        for pair in self.cgroups.values():
            used.update(pair)
        for pset, i in list(self.ids.items()):
            if i in used:
                continue
            for name, k in self._written.pop(i, ()):
                self.maps[name].delete(k)
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
            return sum(len(w) for w in self._written.values())


__all__ = ["Tables", "MIRRORS", "MAPS", "EnfState", "EnfCgroup", "POLICY_DEFAULT"]
