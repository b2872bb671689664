"""Where the OpenSSL libraries are: the host's libssl.so.3, and the copies
processes map (a container's own, a vendored one below /opt ...).

A library is known by the identity of its file (device and inode, as the
kernel's uprobes know it), never by its path: the same file reached through
two paths (``/lib`` and ``/usr/lib`` on a merged-/usr system, a bind mount, a
container rootfs that is a host directory) is one library, and one copy in a
container is a different one even where its path is the same as the host's.
/proc/PID/maps names a file on overlayfs (a container image) by the overlay's
device, one per container: ``resolve`` finds the layer's real file, so the
containers of one image share one library.

Statically linked OpenSSL, BoringSSL, GnuTLS, NSS, rustls and Go's crypto/tls
are not found here (they have no libssl.so.3 to map): their traffic is not
seen in plaintext.
"""
from __future__ import annotations

import dataclasses
import os
import re
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from vigil.host_paths import host_path, proc_path

# the file names of the libraries whose SSL_read/SSL_write are probed
LIB_NAMES = ("libssl.so.3",)
# where the host's own copy is (the first that exists; Debian/Ubuntu, Fedora/RHEL, others)
HOST_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3",
                   "/usr/lib64/libssl.so.3", "/lib64/libssl.so.3", "/usr/lib/libssl.so.3")


@dataclass(frozen=True)
class TlsLib:
    """One library file: ``key`` (major, minor, inode) is its identity;
    ``path`` is where this process can open it; ``pid`` the process it was
    found mapped in (0: the host's own copy); ``mntns`` that process's mount
    namespace (inode; 0 unknown)."""
    key: tuple
    path: str
    pid: int = 0
    mntns: int = 0
    shown: str = ""          # the path as the process sees it (for logs)

    def describe(self) -> str:
        where = f"pid {self.pid}" if self.pid else "host"
        return f"{self.shown or self.path} ({where}, dev {self.key[0]}:{self.key[1]} ino {self.key[2]})"


def is_lib_name(path: str) -> bool:
    return os.path.basename(path) in LIB_NAMES


def host_lib() -> Optional[TlsLib]:
    """The host's libssl.so.3 (None when it has none)."""
    for cand in HOST_CANDIDATES:
        p = host_path(cand)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if not os.path.isfile(p):
            continue
        return TlsLib((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), p, 0, 0, cand)
    return None


def parse_maps_line(line: str) -> Optional[tuple]:
    """((major, minor, inode), path, address range) of one /proc/PID/maps line
    that maps one of LIB_NAMES from a file; None for any other line."""
    parts = line.split(None, 5)
    if len(parts) < 6:
        return None
    path = parts[5].rstrip("\n")
    if path.endswith(" (deleted)") or not path.startswith("/") or not is_lib_name(path):
        return None
    try:
        major, minor = (int(x, 16) for x in parts[3].split(":"))
        ino = int(parts[4])
    except ValueError:
        return None
    if not ino:
        return None
    return (major, minor, ino), path, parts[0]


def _unescape(s: str) -> str:
    """mountinfo's octal escapes (\\040 for a space ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _overlay_layers(options: str) -> list:
    """upperdir, then the lowerdirs, from an overlay's super options (absolute
    paths only: relative ones are the mounter's, unknown here)."""
    upper, lowers = [], []
    for opt in re.split(r"(?<!\\),", options):
        key, _, value = opt.partition("=")
        if key == "upperdir":
            upper = [value]
        elif key == "lowerdir":
            lowers += re.split(r"(?<!\\):", value)
        elif key == "lowerdir+":
            lowers.append(value)
    layers = [_unescape(x.replace("\\:", ":").replace("\\,", ",")) for x in upper + lowers]
    return [x for x in layers if x.startswith("/")]


def real_file(pid: int, path: str, size: int) -> Optional[tuple]:
    """For ``path`` (as process ``pid`` sees it) on an overlayfs mount: the
    identity (major, minor, inode) of the layer's file it is (the upper
    layer's, else the first lower layer's with that name and size) -- what
    the kernel's uprobes attach to; None when not on overlayfs or not found."""
    best = None
    try:
        with open(proc_path(pid, "mountinfo"), errors="replace") as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if not sep or len(fields) < 5 or len(rfields) < 3 or rfields[0] != "overlay":
                    continue
                point = _unescape(fields[4])
                prefix = point.rstrip("/") + "/"
                if path.startswith(prefix) and (best is None or len(point) > len(best[0])):
                    best = (point, _unescape(fields[3]), rfields[2])
    except OSError:
        return None
    if best is None:
        return None
    point, root, options = best
    rel = os.path.join(root, path[len(point.rstrip("/")) + 1:]).lstrip("/")
    for layer in _overlay_layers(options):
        try:
            st = os.stat(host_path(os.path.join(layer, rel)))
        except OSError:
            continue
        if os.path.isfile(host_path(os.path.join(layer, rel))) and st.st_size == size:
            return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        return None       # a file of another size (or a whiteout) hides the lower ones
    return None


def resolve(lib: "TlsLib") -> "TlsLib":
    """``lib`` known by the file the kernel probes: on overlayfs (a container's
    image) the layer's real file, one for every container of that image."""
    try:
        size = os.stat(lib.path).st_size
    except OSError:
        return lib
    real = real_file(lib.pid, lib.shown, size) if lib.pid else None
    if real is None or real == lib.key:
        return lib
    return dataclasses.replace(lib, key=real)


def mount_ns(pid: int) -> int:
    try:
        return os.stat(proc_path(pid, "ns", "mnt")).st_ino
    except OSError:
        return 0


def process_libs(pid: int) -> list:
    """The TLS libraries process ``pid`` maps (distinct files); [] if it maps
    none, has gone, or cannot be read."""
    seen = {}
    try:
        with open(proc_path(pid, "maps"), "r", errors="replace") as f:
            for line in f:
                if "libssl" not in line:
                    continue
                hit = parse_maps_line(line)
                if hit is not None and hit[0] not in seen:
                    seen[hit[0]] = hit[1:]
    except OSError:
        return []
    if not seen:
        return []
    ns = mount_ns(pid)
    out = []
    for key, (path, span) in seen.items():
        # the mapped file itself (map_files: what the process maps, whatever
        # is at its path now), else the path through the process's root
        mapped = proc_path(pid, "map_files", span)
        if not os.path.exists(mapped):
            mapped = proc_path(pid, "root") + path
        out.append(TlsLib(key, mapped, pid, ns, path))
    return out


def function_offsets(path: str, names) -> dict:
    """{name: file offset} of the functions ``names`` the ELF file at path
    defines (its dynamic symbols, then its full symbol table), where a uprobe
    goes; a name it does not define is absent.  Raises OSError if the file
    cannot be read, ValueError if it is not an ELF object."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    want, found = set(names), {}
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
            loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
            for section in (".dynsym", ".symtab"):
                table = elf.get_section_by_name(section)
                if table is None or not hasattr(table, "iter_symbols"):
                    continue
                for sym in table.iter_symbols():
                    name = sym.name.split("@", 1)[0]
                    if name not in want or name in found or sym["st_value"] == 0 \
                            or sym["st_info"]["type"] != "STT_FUNC" \
                            or sym["st_shndx"] == "SHN_UNDEF":
                        continue
                    addr = sym["st_value"]
                    for seg in loads:
                        if seg["p_vaddr"] <= addr < seg["p_vaddr"] + seg["p_memsz"]:
                            found[name] = addr - seg["p_vaddr"] + seg["p_offset"]
                            break
        except (ELFError, KeyError, struct.error) as e:
            raise ValueError(f"{path}: not a readable ELF object ({e})") from None
    return found


# x86-64 instructions SSL_read_ex/SSL_write_ex may begin with before their call
_PROLOGUE = (b"\xf3\x0f\x1e\xfa",            # endbr64
             b"\x48\x83\xec")                # sub $imm8,%rsp (+1 byte)


def _call_after_prologue(code: bytes, at: int) -> Optional[int]:
    """The target offset of the ``call rel32`` that follows the prologue of
    the function at ``at`` (None if it does not look like that)."""
    i = at
    for _ in range(3):
        if code[i:i + 4] == _PROLOGUE[0]:
            i += 4
        elif code[i:i + 3] == _PROLOGUE[1]:
            i += 4
        elif code[i:i + 1] == b"\xe8":
            return i + 5 + struct.unpack_from("<i", code, i + 1)[0]
        else:
            return None
    return None


def _calls(code: bytes, at: int, target: int, span: int = 96) -> bool:
    """Whether the function at ``at`` has a ``call target`` in its first bytes."""
    for i in range(at, min(at + span, len(code) - 5)):
        if code[i] == 0xe8 and i + 5 + struct.unpack_from("<i", code, i + 1)[0] == target:
            return True
    return False


def internal_calls(path: str, offsets: dict) -> dict:
    """OpenSSL 3's own funnels for the data calls: SSL_read, SSL_read_ex (and
    an SSL BIO's reads) all call ssl_read_internal(s, buf, num, &readbytes),
    the writes ssl_write_internal.  Probed there, one probe serves every
    form, and on the x86-64 builds seen (a ``push`` first, which the kernel
    emulates) a probe costs a fraction of one on SSL_read's first instruction
    (a ``sub``, single-stepped).  Found from the call that follows
    SSL_read_ex's prologue, checked to be SSL_read's call too; {} when the
    library does not look like that (the exported functions are probed)."""
    try:
        with open(path, "rb") as f:
            code = f.read()
    except OSError:
        return {}
    out = {}
    for inner, ex, plain in (("ssl_read_internal", "SSL_read_ex", "SSL_read"),
                             ("ssl_write_internal", "SSL_write_ex", "SSL_write")):
        if ex not in offsets or plain not in offsets:
            return {}
        target = _call_after_prologue(code, offsets[ex])
        if target is None or not 0 < target < len(code) or \
                not _calls(code, offsets[plain], target):
            return {}
        out[inner] = target
    return out


def pids() -> Iterator[int]:
    try:
        names = os.listdir(proc_path())
    except OSError:
        return
    for n in names:
        if n.isdigit():
            yield int(n)


