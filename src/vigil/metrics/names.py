"""Names for the numbers the kernel keys its maps by: interfaces, block
devices, syscalls, DNS types and codes, IP peers."""
from __future__ import annotations

import ipaddress
import os
import re
import socket
from functools import lru_cache

UNISTD = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
BLOCK_OPS = {0: "read", 1: "write", 2: "flush", 3: "discard", 5: "secure_erase",
             9: "write_zeroes"}
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


def qtype_name(n: int) -> str:
    return QTYPES.get(n, f"TYPE{n}")


def rcode_name(n: int) -> str:
    return RCODES.get(n, f"RCODE{n}")


@lru_cache(maxsize=1024)
def interface(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"if{ifindex}"


@lru_cache(maxsize=256)
def block_device(dev: int) -> str:
    """The kernel's dev_t (major << 20 | minor) -> its name (vda), as /sys says."""
    major, minor = dev >> 20, dev & 0xFFFFF
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return f"{major}:{minor}"


def block_op(op: int) -> str:
    return BLOCK_OPS.get(op, f"op{op}")


@lru_cache(maxsize=1)
def _syscalls() -> dict:
    out = {}
    if os.path.exists(UNISTD):
        with open(UNISTD) as f:
            for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", f.read()):
                out[int(m.group(2))] = m.group(1)
    return out


def syscall_name(nr: int) -> str:
    return _syscalls().get(nr, f"syscall_{nr}")


@lru_cache(maxsize=65536)
def peer(family: int, raw: bytes, port: int) -> str:
    """IP:port ([v6]:port) of an address as the kernel stores it."""
    if family == socket.AF_INET:
        return f"{ipaddress.IPv4Address(bytes(raw[:4]))}:{port}"
    a = ipaddress.IPv6Address(bytes(raw[:16]))
    if a.ipv4_mapped:
        return f"{a.ipv4_mapped}:{port}"
    return f"[{a}]:{port}"
