"""Raw ring-buffer records -> vigil.events.Event.

One decoder per C layout.  Decoder.decode does what every record shares:
it unpacks the record with the decoder's precompiled struct.Struct (derived
from vigil.events.structs) and builds the Event's dict from the header; the
decoder then adds its layout's fields to that dict.  Which decoder reads which
kind is the kinds registry's word (vigil.events.kinds: KindSpec.decoder); each
decoder says the layout it reads (``@_reads``) and the Decoder checks the
registry agrees.
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct

from vigil.events import structs as S
from vigil.events import Event, Kind, boot_offset_ns
from vigil.events.kinds import KINDS, OPEN_VIA, OPEN_WATCHED, SYSCALL_NAMES

# the environment after an ev_exec (struct ev_exec_env), offsets from its mirror
_ENV_LEN_AT, _ENV_AT = S.EvExecEnv.env_len.offset, S.EvExecEnv.env.offset
_ENV_HDR = struct.Struct("<IB")
_OPEN, _ = S.struct_format(S.EvOpen)
# an open sent without its realpath (realpath_set = 0) ends before it
_OPEN_SHORT = struct.Struct(_OPEN.format[:-len(f"{S.PATH_LEN}s")])
_KIND = struct.Struct("<I")


def stat_dev(kdev: int) -> int:
    """A device number in the kernel's encoding (MAJOR << 20 | MINOR, what
    the sensors send) as stat(2) gives it (st_dev)."""
    return os.makedev(kdev >> 20, kdev & 0xFFFFF)


def kernel_dev(st_dev: int) -> int:
    """st_dev in the kernel's encoding (the watched_inodes map's keys)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


class _Names(dict):
    """number -> name; a number without a name reads as its decimal string."""

    def __missing__(self, n):
        return str(n)


_SYSCALL_NAMES = _Names(SYSCALL_NAMES)
FAMILIES = _Names({1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6"})
# socket(2) domains by number (linux), as Falco names them
SOCKET_DOMAINS = _Names({0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 3: "AF_AX25", 4: "AF_IPX",
                         5: "AF_APPLETALK", 6: "AF_NETROM", 7: "AF_BRIDGE", 8: "AF_ATMPVC",
                         9: "AF_X25", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET",
                         29: "AF_CAN", 31: "AF_BLUETOOTH", 38: "AF_ALG", 40: "AF_VSOCK",
                         44: "AF_XDP"})
_SOCK_TYPE_PROTO = {1: "tcp", 2: "udp", 3: "raw"}   # SOCK_STREAM / DGRAM / RAW, protocol 0
PROTOS = _Names({6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 0: None})
# inode type (mode >> 12) -> Falco-ish fd type
FD_TYPES = {0o1: "pipe", 0o2: "char", 0o4: "directory", 0o6: "block", 0o10: "file",
            0o12: "symlink", 0o14: "socket"}
DNS_TYPES = _Names({1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
                    28: "AAAA", 33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB",
                    65: "HTTPS", 255: "ANY", 257: "CAA"})

_ntop = socket.inet_ntop
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def _s(b: bytes) -> str:
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode("utf-8", "replace")


def _addr(family: int, raw: bytes):
    if family == 2:
        return _ntop(_AF_INET, raw[:4])
    if family == 10:
        return _ntop(_AF_INET6, raw)
    return None


# how many of an ev_cred's arguments each syscall has
_ID_NARGS = {"setgid": 1, "setfsuid": 1, "setfsgid": 1, "setreuid": 2, "setregid": 2,
             "setresuid": 3, "setresgid": 3, "setpgid": 2}


def _argv(blob: bytes, n: int) -> list:
    """NUL-separated argv bytes (the first n of blob) as a list of strings."""
    blob = blob[:n]
    if blob.endswith(b"\0"):
        blob = blob[:-1]
    return [a.decode("utf-8", "replace") for a in blob.split(b"\0")] if blob else []


def _norm(path: str) -> str:
    """Collapse '.', '..' and '//' the way Falco's fd.name does (lexically)."""
    if "/." in path or "//" in path or path.endswith("/"):
        p = os.path.normpath(path)
        return "/" + p.lstrip("/") if p.startswith("//") else p
    return path


def parse_dns_query(payload: bytes):
    """(name, type) of the first question of a DNS message, or (None, None)."""
    if len(payload) < 17:
        return None, None
    qd = (payload[4] << 8) | payload[5]
    if qd < 1:
        return None, None
    pos = 12
    labels = []
    n = len(payload)
    while pos < n:
        ln = payload[pos]
        if ln == 0:
            pos += 1
            break
        if ln & 0xC0 or pos + 1 + ln > n:
            return None, None
        labels.append(payload[pos + 1:pos + 1 + ln].decode("ascii", "replace"))
        pos += 1 + ln
    else:
        return None, None
    if pos + 2 > n:
        return None, None
    qtype = (payload[pos] << 8) | payload[pos + 1]
    return ".".join(labels), DNS_TYPES[qtype]


def _reads(layout, fmt=None):
    """Mark a decoder with the C layout (ctypes mirror) it reads and the
    struct.Struct Decoder.decode unpacks the record with (the layout's own
    unless given)."""
    def mark(fn):
        fn.layout = layout
        fn.fmt = fmt if fmt is not None else S.struct_format(layout)[0]
        return fn
    return mark


def _generic(layout):
    """A decoder for a layout without its own: each member (after the
    header) becomes the event field of its name; char arrays are text."""
    fmt, names = S.struct_format(layout)
    text = {n for n, t, _o in S.flat_fields(layout)
            if getattr(t, "_type_", None) is ctypes.c_char}
    own = [(i, n, n in text) for i, n in enumerate(names) if i >= 9]

    def fill(d, v, raw, off, kind):
        for i, n, is_text in own:
            d[n] = _s(v[i]) if is_text else v[i]
    fill.layout, fill.fmt = layout, fmt
    return fill


class Decoder:
    """Turns raw records into Events; counts what it could not decode."""

    def __init__(self):
        # names the files recognised by identity: identity(dev, ino, watched,
        # path) -> the rules' path for the watched_inodes key that matched
        # (vigil.kernel.watched.WatchedFiles.name_of), or None
        self.identity = None
        self.boot_offset = 0
        self.resync_clock()
        self.errors = 0
        self._comms: dict = {}   # raw comm bytes -> str
        # kind number -> (kind, label, decoder, the decoder's fmt.unpack_from)
        self._table = [None] * 64
        for spec in KINDS:
            if spec.decoder:
                fn = getattr(self, spec.decoder)
                if fn.layout is not spec.layout:
                    raise TypeError(f"event kind {spec.name}: decoder {spec.decoder} reads "
                                    f"{fn.layout.__name__}, not {spec.layout.__name__}")
            else:
                fn = _generic(spec.layout)
            k = spec.kind
            self._table[int(k)] = (k, k.label, fn, fn.fmt.unpack_from)

    def resync_clock(self) -> None:
        """Offset from CLOCK_BOOTTIME (kernel timestamps) to wall-clock ns."""
        self.boot_offset = boot_offset_ns()

    def decode(self, raw, offset: int = 0) -> Event | None:
        """Decode the record at raw[offset:]: the header here, the rest by
        the kind's decoder, which adds to the Event's dict."""
        try:
            kind = _KIND.unpack_from(raw, offset + 8)[0]
            entry = self._table[kind] if kind < 64 else None
            if entry is None:
                self.errors += 1
                return None
            k, label, fill, unpack = entry
            v = unpack(raw, offset)
            comm = self._comms.get(v[8])
            if comm is None:
                comm = self._comm(v[8])
            e = Event.__new__(Event)
            d = e.__dict__ = {
                "kind": k, "type": label, "time": v[0] + self.boot_offset, "pid": v[2],
                "tid": v[3], "ppid": v[4], "uid": v[5], "gid": v[6], "cgroup_id": v[7],
                "comm": comm,
            }
            fill(d, v, raw, offset, k)
            return e
        except (struct.error, IndexError, ValueError, UnicodeError):
            self.errors += 1
            return None

    def _comm(self, raw_comm: bytes) -> str:
        comms = self._comms
        if len(comms) > 4096:
            comms.clear()
        comm = comms[raw_comm] = _s(raw_comm)
        return comm

    # Each decoder: fill(d, v, raw, off, kind) adds its layout's fields to the
    # Event's dict d; v is the record unpacked with its fmt (indices 0 ts 1 kind
    # 2 pid 3 tid 4 ppid 5 uid 6 gid 7 cgroup 8 comm, then per layout), raw[off:]
    # the record itself.

    @_reads(S.EvExec)
    def _exec(self, d, v, raw, off, kind):
        (loginuid, args_len, args_trunc, _exe_t, _cwd_t, exe_flags, vpid, start_ns, exe_ino,
         exe_ctime, exe_mtime, cap_inh, cap_prm, cap_eff, sid, vpgid,
         tty, cgname, exe, cwd, args) = v[9:]
        d["exe"] = _s(exe)
        d["args"] = _argv(args, args_len)
        d["args_truncated"] = bool(args_trunc)
        d["cwd"] = _s(cwd)
        d["tty"] = _s(tty)
        d["loginuid"] = -1 if loginuid == 0xFFFFFFFF else loginuid
        d["cgroup_name"] = _s(cgname)
        d["exe_ctime"] = exe_ctime // 1_000_000_000
        d["vpid"] = vpid
        d["start_time"] = start_ns + self.boot_offset if start_ns else None
        d["exe_ino"] = exe_ino
        d["exe_ctime_ns"] = exe_ctime
        d["exe_mtime_ns"] = exe_mtime
        d["exe_flags"] = exe_flags & ~S.EXEC_HAS_ENV
        d["cap_inheritable"], d["cap_permitted"], d["cap_effective"] = cap_inh, cap_prm, cap_eff
        d["sid"], d["vpgid"] = sid, vpgid
        d["syscall"] = "execve"
        if exe_flags & S.EXEC_HAS_ENV:
            env_len, env_trunc = _ENV_HDR.unpack_from(raw, off + _ENV_LEN_AT)
            at = off + _ENV_AT
            blob = bytes(raw[at:at + min(env_len, S.ENV_LEN)])
            env = _argv(blob, len(blob))
            if env_trunc and env:
                env.pop()     # the last entry was cut
            d["env"] = env

    @_reads(S.EvExit)
    def _exit(self, d, v, raw, off, kind):
        d["exit_code"] = v[9]
        d["exit_signal"] = v[10]

    @_reads(S.EvFork)
    def _fork(self, d, v, raw, off, kind):
        d["child_pid"] = v[9]

    @_reads(S.EvOpen, _OPEN_SHORT)
    def _open(self, d, v, raw, off, kind):
        (ret, flags, mode, dirfd, sc, trunc, unres, kdev, watched, real_trunc, via, real_set, ino,
         hit_dev, hit_ino, path) = v[9:]
        realpath = b"\0"
        if real_set:
            realpath = raw[off + _OPEN_SHORT.size:off + _OPEN.size]
            if isinstance(realpath, memoryview):
                realpath = realpath.tobytes()
        d["ret"] = ret
        d["fd"] = ret if ret >= 0 else None
        d["flags"] = flags
        d["mode"] = mode
        d["syscall"] = _SYSCALL_NAMES[sc]
        real = _s(realpath) if real_set and realpath[:1] != b"\0" and not real_trunc else None
        given = _s(path)
        # a path the kernel could not read whole (or an open without one:
        # open_by_handle_at) is named by the file it reached
        if real and (trunc or unres or not given):
            given = real
        norm = _norm(given)
        d["path"] = norm
        if norm != given:
            d["path_raw"] = given      # fd.nameraw: before normalisation
        if ret >= 0 and kdev:
            d["dev"] = stat_dev(kdev)
            d["ino"] = ino
        if watched:
            d["watched"] = OPEN_WATCHED[watched] if watched < len(OPEN_WATCHED) else "file"
            if self.identity is not None:
                real = self.identity(hit_dev, hit_ino, watched, real or d["path"]) or real
        if real:
            d["realpath"] = real
        if via:
            d["via"] = OPEN_VIA[via] if via < len(OPEN_VIA) else str(via)

    @_reads(S.EvPath2)
    def _path2(self, d, v, raw, off, kind):
        ret, flags, mode, sc, _t1, _t2, path, path2 = v[9:]
        d["ret"] = ret
        d["flags"] = flags
        d["mode"] = mode
        d["syscall"] = _SYSCALL_NAMES[sc]
        p = _s(path)
        d["path"] = p if kind == Kind.SYMLINK else _norm(p)
        p2 = _s(path2)
        if p2:
            d["path2"] = _norm(p2)

    @_reads(S.EvNet)
    def _net(self, d, v, raw, off, kind):
        ret, fd, family, sc, proto, sport, dport, saddr, daddr, unix_path = v[9:]
        d["ret"] = ret
        d["fd"] = fd
        d["family"] = FAMILIES[family]
        d["syscall"] = _SYSCALL_NAMES[sc]
        d["proto"] = PROTOS[proto]
        if family == 1:
            p = _s(unix_path)
            d["path"] = p if p else None
        else:
            d["saddr"] = _addr(family, saddr)
            d["daddr"] = _addr(family, daddr)
            d["sport"] = sport
            d["dport"] = dport

    @_reads(S.EvDns)
    def _dns(self, d, v, raw, off, kind):
        fd, family, sc, dport, ln, daddr, payload = v[9:]
        q, t = parse_dns_query(payload[:ln])
        d["fd"] = fd
        d["family"] = FAMILIES[family]
        d["syscall"] = _SYSCALL_NAMES[sc]
        d["proto"] = "udp"
        d["daddr"] = _addr(family, daddr)
        d["dport"] = dport
        d["query"] = q
        d["qtype"] = t

    @_reads(S.EvSys)
    def _sys(self, d, v, raw, off, kind):
        ret, a0, a1, sc, family, fd_type, sport, dport, proto, saddr, daddr, path = v[9:]
        d["ret"] = ret
        d["syscall"] = _SYSCALL_NAMES[sc]
        if kind == Kind.PTRACE:
            d["request"] = a0
            d["target_pid"] = a1
        elif kind == Kind.DUP:
            d["fd"] = a0
            d["newfd"] = a1
            if family in (2, 10):
                d["fd_type"] = "ipv4" if family == 2 else "ipv6"
                d["family"] = FAMILIES[family]
                d["proto"] = PROTOS[proto]
                d["saddr"] = _addr(family, saddr)
                d["daddr"] = _addr(family, daddr)
                d["sport"] = sport
                d["dport"] = dport
            elif family == 1:
                d["fd_type"] = "unix"
                d["family"] = "AF_UNIX"
            else:
                d["fd_type"] = FD_TYPES.get(fd_type, "unknown")
        elif kind == Kind.MEMFD:
            d["path"] = _s(path)
            d["flags"] = a0
            d["fd"] = ret if ret >= 0 else None
        elif kind == Kind.MODULE:
            p = _s(path)
            if p:
                d["path"] = p
            if a1 >= 0:
                d["fd"] = a1
        elif kind == Kind.IO_URING_SETUP:
            d["fd"] = ret if ret >= 0 else None
            d["entries"] = a0
            d["flags"] = a1

    @_reads(S.EvCred)
    def _cred(self, d, v, raw, off, kind):
        ret, a0, a1, a2, sc, cap_inh, cap_prm, cap_eff, sid, vpgid = v[9:]
        d["ret"] = ret
        name = d["syscall"] = _SYSCALL_NAMES[sc]
        d["cap_inheritable"], d["cap_permitted"], d["cap_effective"] = cap_inh, cap_prm, cap_eff
        d["sid"], d["vpgid"] = sid, vpgid
        if kind == Kind.SETUID:
            d["new_uid"] = a0
        else:
            d["id_args"] = [a0, a1, a2][:_ID_NARGS.get(name, 0)]

    @_reads(S.EvExecfail)
    def _execfail(self, d, v, raw, off, kind):
        ret, args_len, sc, args_trunc, path, args = v[9:]
        d["ret"] = ret
        d["syscall"] = _SYSCALL_NAMES[sc]
        d["path"] = _s(path)
        d["args"] = _argv(args, args_len)
        d["args_truncated"] = bool(args_trunc)

    @_reads(S.EvRename)
    def _rename(self, d, v, raw, off, kind):
        d["target_pid"] = v[9]
        d["old_name"] = _s(v[11])
        d["new_name"] = _s(v[12])
        d["syscall"] = "prctl"

    @_reads(S.EvSys)
    def _sysx(self, d, v, raw, off, kind):
        """The sysx sensor's kinds (socket, setns, unshare, bpf, userfaultfd, fchmod)."""
        ret, a0, a1, sc, family, fd_type, sport, dport, proto, saddr, daddr, path = v[9:]
        d["ret"] = ret
        d["syscall"] = _SYSCALL_NAMES[sc]
        if kind == Kind.SOCKET:
            d["family"] = SOCKET_DOMAINS[family]
            d["sock_type"] = a1
            if family in (2, 10):
                d["proto"] = PROTOS[proto] if proto else _SOCK_TYPE_PROTO.get(a1 & 0xF)
            if ret >= 0:
                d["fd"] = ret
        elif kind == Kind.SETNS or kind == Kind.FCHMOD:
            d["fd"] = a0
            p = _s(path)
            if p and kind == Kind.FCHMOD:   # a namespace file's path says nothing
                d["path"] = p
            if fd_type:
                d["fd_type"] = FD_TYPES.get(fd_type, "unknown")
            if kind == Kind.SETNS:
                d["nstype"] = a1
            else:
                d["mode"] = a1 & 0o7777
        elif kind == Kind.BPF:
            d["cmd"] = a0
        else:                       # unshare, userfaultfd
            d["flags"] = a0
            if kind == Kind.USERFAULTFD and ret >= 0:
                d["fd"] = ret

    @_reads(S.EvCgroup)
    def _cgroup(self, d, v, raw, off, kind):
        cg_id, hierarchy, level, path = v[9:]
        d["cgroup_id"] = cg_id        # the created/removed cgroup, not the actor's
        d["path"] = _s(path)
