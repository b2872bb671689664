"""Python mirror of the kernel's event layouts (bpf/vigil.h).

Each ctypes Structure below is the single Python description of one C struct;
the fast decoders use a struct.Struct format derived from it.
tests/test_structs.py compares sizes and member offsets with the BTF of the
built objects, so a change on one side that is not made on the other fails.
"""
from __future__ import annotations

import ctypes
import struct
from ctypes import c_char, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64

COMM_LEN = 16
PATH_LEN = 256
ARGS_LEN = 4096
CGNAME_LEN = 64
DNS_LEN = 512
PREFIX_LEN = 128


class EvHdr(ctypes.Structure):
    _fields_ = [
        ("ts", c_uint64), ("kind", c_uint32), ("pid", c_uint32), ("tid", c_uint32),
        ("ppid", c_uint32), ("uid", c_uint32), ("gid", c_uint32), ("cgroup_id", c_uint64),
        ("comm", c_char * COMM_LEN),
    ]


# enum exe_flag (ev_exec.exe_flags)
EXE_WRITABLE, EXE_UPPER_LAYER, EXE_LOWER_LAYER, EXE_FROM_MEMFD = 1, 2, 4, 8
EXE_FLAGS = {"EXE_WRITABLE": EXE_WRITABLE, "EXE_UPPER_LAYER": EXE_UPPER_LAYER,
             "EXE_LOWER_LAYER": EXE_LOWER_LAYER, "EXE_FROM_MEMFD": EXE_FROM_MEMFD}


class EvIds(ctypes.Structure):
    _fields_ = [
        ("cap_inheritable", c_uint64), ("cap_permitted", c_uint64), ("cap_effective", c_uint64),
        ("sid", c_uint32), ("vpgid", c_uint32),
    ]


class EvExec(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("loginuid", c_uint32), ("args_len", c_uint32),
        ("args_truncated", c_uint8), ("exe_truncated", c_uint8), ("cwd_truncated", c_uint8),
        ("exe_flags", c_uint8), ("vpid", c_uint32), ("start_ns", c_uint64),
        ("exe_ino", c_uint64), ("exe_ctime", c_uint64), ("exe_mtime", c_uint64),
        ("ids", EvIds), ("tty", c_char * 16), ("cgroup_name", c_char * CGNAME_LEN),
        ("exe", c_char * PATH_LEN), ("cwd", c_char * PATH_LEN), ("args", c_char * ARGS_LEN),
    ]


class EvExit(ctypes.Structure):
    _fields_ = [("h", EvHdr), ("exit_code", c_int32), ("exit_signal", c_int32)]


class EvFork(ctypes.Structure):
    _fields_ = [("h", EvHdr), ("child_pid", c_uint32), ("_pad", c_uint32)]


class EvOpen(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("flags", c_uint32), ("mode", c_uint32),
        ("dirfd", c_int32), ("syscall", c_uint16), ("path_truncated", c_uint8),
        ("unresolved", c_uint8), ("dev", c_uint32), ("watched", c_uint8),
        ("realpath_truncated", c_uint8), ("via", c_uint8), ("realpath_set", c_uint8),
        ("ino", c_uint64), ("hit_dev", c_uint32), ("_pad1", c_uint32), ("hit_ino", c_uint64),
        ("path", c_char * PATH_LEN), ("realpath", c_char * PATH_LEN),
    ]


class EvRename(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("target_pid", c_uint32), ("target_tid", c_uint32),
        ("old_comm", c_char * COMM_LEN), ("new_comm", c_char * COMM_LEN),
    ]


class EvPath2(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("flags", c_uint32), ("mode", c_uint32),
        ("syscall", c_uint16), ("path_truncated", c_uint8), ("path2_truncated", c_uint8),
        ("_pad", c_uint32), ("path", c_char * PATH_LEN), ("path2", c_char * PATH_LEN),
    ]


class EvNet(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("fd", c_int32), ("family", c_uint16),
        ("syscall", c_uint16), ("proto", c_uint16), ("sport", c_uint16), ("dport", c_uint16),
        ("_pad", c_uint16), ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16),
        ("unix_path", c_char * 108), ("_pad2", c_uint32),
    ]


class EvDns(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("fd", c_int32), ("family", c_uint16), ("syscall", c_uint16),
        ("dport", c_uint16), ("len", c_uint16), ("_pad", c_uint32),
        ("daddr", c_uint8 * 16), ("payload", c_uint8 * DNS_LEN),
    ]


class EvSys(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("arg0", c_int64), ("arg1", c_int64),
        ("syscall", c_uint16), ("family", c_uint16), ("fd_type", c_uint16),
        ("sport", c_uint16), ("dport", c_uint16), ("proto", c_uint16), ("_pad", c_uint32),
        ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16), ("path", c_char * PATH_LEN),
    ]


class EvCred(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("arg0", c_int64), ("arg1", c_int64), ("arg2", c_int64),
        ("syscall", c_uint16), ("_pad", c_uint16), ("_pad2", c_uint32), ("ids", EvIds),
    ]


class EvExecfail(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ret", c_int64), ("args_len", c_uint32), ("syscall", c_uint16),
        ("args_truncated", c_uint8), ("_pad", c_uint8), ("path", c_char * PATH_LEN),
        ("args", c_char * ARGS_LEN),
    ]


class EvCgroup(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("id", c_uint64), ("hierarchy", c_uint32), ("level", c_uint32),
        ("path", c_char * PATH_LEN),
    ]


class EvNetVerdict(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ident", c_uint32), ("repeats", c_uint32), ("policy", c_uint16),
        ("verdict", c_uint8), ("direction", c_uint8), ("peer_family", c_uint16),
        ("peer_proto", c_uint16), ("peer_port", c_uint16), ("_pad", c_uint16),
        ("peer_addr", c_uint8 * 16),
    ]


class EvExecVerdict(ctypes.Structure):
    _fields_ = [
        ("h", EvHdr), ("ident", c_uint32), ("policy", c_uint16), ("verdict", c_uint8),
        ("direction", c_uint8), ("vpid", c_uint32), ("_pad", c_uint32),
        ("exe", c_char * PATH_LEN),
    ]


class EvLoss(ctypes.Structure):
    """Not an event: a process lost events (over budget, bulk ring full)."""
    _fields_ = [
        ("h", EvHdr), ("over_budget", c_uint64), ("lost", c_uint64), ("rate", c_uint32),
        ("burst", c_uint32), ("last_kind", c_uint32), ("_pad", c_uint32),
    ]


# L7 (kernel/bpf/events.h enum l7_dir, l7_proto, l7_flag; l7.h says what is sent when)
L7_DATA_LEN = 1024
L7_DIRS = {"L7_DIR_READ": 1, "L7_DIR_WRITE": 2, "L7_DIR_CLOSE": 3}
L7_PROTOS = {"L7_PROTO_HTTP": 1, "L7_PROTO_REDIS": 2, "L7_PROTO_POSTGRES": 4}
L7_FLAGS = {"L7_F_TLS": 1, "L7_F_REQUEST": 2, "L7_F_RESPONSE": 4, "L7_F_CLIENT": 8,
            "L7_F_SERVER": 16}


class EvL7(ctypes.Structure):
    """One chunk of a read or write on a followed TCP connection, or its
    close; sent L7_HDR_SIZE + cap bytes long (data holds cap bytes)."""
    _fields_ = [
        ("h", EvHdr), ("fd", c_int32), ("len", c_uint32), ("dir", c_uint8),
        ("protocol", c_uint8), ("flags", c_uint16), ("family", c_uint16), ("cap", c_uint16),
        ("sport", c_uint16), ("dport", c_uint16), ("_pad", c_uint32),
        ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16), ("data", c_uint8 * L7_DATA_LEN),
    ]


L7_HDR_SIZE = EvL7.data.offset


class VigilCfg(ctypes.Structure):
    _fields_ = [
        ("kinds", c_uint64), ("scope", c_uint8), ("open_filter", c_uint8),
        ("comm_filter", c_uint8), ("cgroup_filter", c_uint8), ("budget_rate", c_uint32),
        ("ok_only", c_uint64), ("budget_burst", c_uint32), ("l7_protocols", c_uint32),
    ]


class InodeKey(ctypes.Structure):
    _fields_ = [("dev", c_uint32), ("_pad", c_uint32), ("ino", c_uint64)]


class PrefixKey(ctypes.Structure):
    _fields_ = [("prefixlen", c_uint32), ("data", c_char * PREFIX_LEN)]


# C struct name -> mirror, for the BTF comparison test
MIRRORS = {
    "ev_hdr": EvHdr, "ev_exec": EvExec, "ev_exit": EvExit, "ev_fork": EvFork,
    "ev_open": EvOpen, "ev_path2": EvPath2, "ev_net": EvNet, "ev_dns": EvDns,
    "ev_sys": EvSys, "ev_cred": EvCred, "ev_execfail": EvExecfail,
    "ev_cgroup": EvCgroup, "ev_rename": EvRename, "ev_loss": EvLoss, "vigil_cfg": VigilCfg,
    "ev_net_verdict": EvNetVerdict, "ev_exec_verdict": EvExecVerdict,
    "inode_key": InodeKey, "ev_l7": EvL7,
}

_FMT = {
    c_uint8: "B", c_uint16: "H", c_uint32: "I", c_uint64: "Q",
    c_int32: "i", c_int64: "q",
}


def flat_fields(cls, prefix: str = ""):
    """(name, ctype, offset) of every leaf member, nested structs flattened."""
    out = []
    for name, ctype in cls._fields_:
        off = getattr(cls, name).offset
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            for sub, st, so in flat_fields(ctype):
                out.append((sub, st, off + so))
        else:
            out.append((prefix + name, ctype, off))
    return out


def struct_format(cls) -> tuple:
    """A struct.Struct over the whole C struct and the names of its members,
    padding members dropped from the names (they are read as pad bytes)."""
    fmt = "<"
    names = []
    pos = 0
    for name, ctype, off in flat_fields(cls):
        if off > pos:
            fmt += f"{off - pos}x"
        size = ctypes.sizeof(ctype)
        if hasattr(ctype, "_length_"):
            code = f"{size}s"
        else:
            code = _FMT[ctype]
        if name.startswith("_"):
            fmt += f"{size}x"
        else:
            fmt += code
            names.append(name)
        pos = off + size
    total = ctypes.sizeof(cls)
    if total > pos:
        fmt += f"{total - pos}x"
    s = struct.Struct(fmt)
    assert s.size == total, (cls.__name__, s.size, total)
    return s, tuple(names)
