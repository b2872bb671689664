"""The metric programs' map layouts (kernel/bpf/metrics/*.bpf.c), mirrored
once; tests/test_metrics_layouts.py checks them against the objects' BTF.
And reading a whole map at once (``bpf_map_lookup_batch``: one syscall per
few thousand entries, so a scrape of 10k series stays quick)."""
from __future__ import annotations

import ctypes
import errno
import struct
from ctypes import c_char, c_int16, c_int64, c_uint8, c_uint16, c_uint32, c_uint64

from vigil.kernel import libbpf

HIST_SLOTS = 32


class Hist(ctypes.Structure):
    _fields_ = [("slots", c_uint64 * HIST_SLOTS), ("sum", c_uint64)]


class TcpConnKey(ctypes.Structure):
    _fields_ = [("cgroup_id", c_uint64), ("daddr", c_uint8 * 16), ("dport", c_uint16),
                ("family", c_uint16), ("result", c_uint32)]


class TcpDirKey(ctypes.Structure):
    _fields_ = [("cgroup_id", c_uint64), ("direction", c_uint32), ("_pad", c_uint32)]


class TcpSockInfo(ctypes.Structure):
    _fields_ = [("ts", c_uint64), ("established_ts", c_uint64), ("pid", c_uint32),
                ("direction", c_uint32), ("counted", c_uint8), ("_pad", c_uint8 * 3),
                ("sport", c_uint16), ("dport", c_uint16),
                ("comm", c_char * 16)]


class TcpTrace(ctypes.Structure):
    _fields_ = [("ts", c_uint64), ("duration_ns", c_uint64), ("rx_bytes", c_uint64),
                ("tx_bytes", c_uint64), ("what", c_uint32), ("pid", c_uint32),
                ("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16), ("sport", c_uint16),
                ("dport", c_uint16), ("family", c_uint16), ("state", c_uint16),
                ("result", c_uint32), ("_pad", c_uint32), ("comm", c_char * 16)]


class PktKey(ctypes.Structure):
    _fields_ = [("cgroup_id", c_uint64), ("ifindex", c_uint32), ("direction", c_uint32)]


class PktStats(ctypes.Structure):
    _fields_ = [("packets", c_uint64), ("size", Hist)]


class BioKey(ctypes.Structure):
    _fields_ = [("dev", c_uint32), ("op", c_uint32)]


class DnsqKey(ctypes.Structure):
    _fields_ = [("tgid", c_uint32), ("id", c_uint16), ("_pad", c_uint16)]


class DnsqVal(ctypes.Structure):
    _fields_ = [("ts", c_uint64), ("cgroup_id", c_uint64), ("qtype", c_uint16),
                ("_pad", c_uint16 * 3)]


class DnsKey(ctypes.Structure):
    _fields_ = [("cgroup_id", c_uint64), ("qtype", c_uint16), ("rcode", c_uint16),
                ("_pad", c_uint32)]


# C struct name -> mirror (the test's table)
LAYOUTS = {"hist": Hist, "tcp_conn_key": TcpConnKey, "tcp_dir_key": TcpDirKey,
           "tcp_sock_info": TcpSockInfo, "tcp_trace": TcpTrace, "pkt_key": PktKey,
           "pkt_stats": PktStats, "bio_key": BioKey, "dnsq_key": DnsqKey, "dnsq_val": DnsqVal,
           "dns_key": DnsKey}

TCP_RESULTS = ("success", "refused", "timeout", "other")
DIRECTIONS_TCP = ("outbound", "inbound")
DIRECTIONS_PKT = ("receive", "transmit")
_ = (c_int16, c_int64)

_batch = None


def _batch_fn():
    global _batch
    if _batch is None:
        L = libbpf.lib()
        fn = L.bpf_map_lookup_batch
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.POINTER(c_uint32), ctypes.c_void_p]
        _batch = fn
    return _batch


def read_all(m, chunk: int = 4096) -> list:
    """[(key bytes, value bytes)] of a hash map; a per-CPU map's value is every
    CPU's, each rounded up to 8 bytes (``percpu_values`` splits it)."""
    vsize = m._vsize()
    ks, out = m.key_size, []
    fn = _batch_fn()
    keys = ctypes.create_string_buffer(ks * chunk)
    vals = ctypes.create_string_buffer(vsize * chunk)
    token_in, token_out = None, ctypes.create_string_buffer(max(ks, 8))
    while True:
        n = c_uint32(chunk)
        rc = fn(m.fd, None if token_in is None else ctypes.byref(token_in),
                ctypes.byref(token_out), keys, vals, ctypes.byref(n), None)
        err = ctypes.get_errno() if rc < 0 else 0
        if rc < 0 and err not in (errno.ENOENT, 0) and rc != -errno.ENOENT:
            if err == errno.EINVAL or rc == -errno.EINVAL:      # no batch ops: one by one
                return list(m.items())
            raise OSError(err or -rc, f"read map {m.name}: {errno.errorcode.get(err or -rc)}")
        kr, vr = keys.raw, vals.raw
        for i in range(n.value):
            out.append((kr[i * ks:(i + 1) * ks], vr[i * vsize:(i + 1) * vsize]))
        if rc < 0:
            return out
        token_in = ctypes.create_string_buffer(token_out.raw, len(token_out.raw))


def percpu_split(m, raw: bytes) -> list:
    step = (m.value_size + 7) // 8 * 8
    return [raw[i:i + m.value_size] for i in range(0, len(raw), step)]


_HIST = struct.Struct(f"<{HIST_SLOTS + 1}Q")


def hist_of(raw: bytes, offset: int = 0) -> list:
    """[slot counts..., sum] of one struct hist."""
    return list(_HIST.unpack_from(raw, offset))


def hist_add(acc: list, raw: bytes, offset: int = 0) -> list:
    v = _HIST.unpack_from(raw, offset)
    if acc is None:
        return list(v)
    for i, x in enumerate(v):
        acc[i] += x
    return acc
