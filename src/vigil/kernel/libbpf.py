"""A thin ctypes binding to the system libbpf (libbpf.so.1).

Only what vigil uses: objects, programs, links, maps, and the variables of an
object's data sections (read from its BTF).
Every call that can fail raises :class:`BpfError` with errno and libbpf's
recent log lines.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import threading
from typing import Optional
from collections import deque

log = logging.getLogger("vigil.kernel.libbpf")

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_size_t = ctypes.c_size_t
c_uint = ctypes.c_uint

LIBBPF_NAME = os.environ.get("VIGIL_LIBBPF", "libbpf.so.1")

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2


class BpfError(OSError):
    """A libbpf or bpf(2) call failed."""

    def __init__(self, what: str, err: int, details: str = ""):
        self.what = what
        self.details = details
        msg = f"{what}: {os.strerror(err) if err else 'failed'}"
        super().__init__(err, msg)


class LibbpfMissing(RuntimeError):
    pass


_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_lib = None
_libc = None
_print_cb = None
# the last libbpf messages (warnings and verifier logs), to explain failures
_recent = deque(maxlen=400)
_recent_lock = threading.Lock()
_print_lock = threading.Lock()
_print_buf = ctypes.create_string_buffer(1 << 20)


def _sig(fn, restype, *argtypes):
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


def lib():
    """Load libbpf.so.1 once; raises LibbpfMissing with what to do."""
    global _lib, _libc, _print_cb
    if _lib is not None:
        return _lib
    try:
        L = ctypes.CDLL(LIBBPF_NAME, use_errno=True)
    except OSError as e:
        raise LibbpfMissing(
            f"cannot load {LIBBPF_NAME} ({e}); install it: apt-get install libbpf1") from None
    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    _libc.vsnprintf.restype = c_int
    _libc.syscall.restype = ctypes.c_long

    _sig(L.bpf_object__open_file, c_void_p, c_char_p, c_void_p)
    _sig(L.bpf_object__load, c_int, c_void_p)
    _sig(L.bpf_object__close, None, c_void_p)
    _sig(L.bpf_object__next_program, c_void_p, c_void_p, c_void_p)
    _sig(L.bpf_object__next_map, c_void_p, c_void_p, c_void_p)
    _sig(L.bpf_object__find_map_by_name, c_void_p, c_void_p, c_char_p)
    _sig(L.bpf_program__name, c_char_p, c_void_p)
    _sig(L.bpf_program__section_name, c_char_p, c_void_p)
    _sig(L.bpf_program__set_autoload, c_int, c_void_p, ctypes.c_bool)
    _sig(L.bpf_program__autoload, ctypes.c_bool, c_void_p)
    _sig(L.bpf_program__attach, c_void_p, c_void_p)
    _sig(L.bpf_program__attach_perf_event, c_void_p, c_void_p, c_int)
    _sig(L.bpf_program__attach_cgroup, c_void_p, c_void_p, c_int)
    _sig(L.bpf_program__attach_uprobe_opts, c_void_p, c_void_p, c_int, c_char_p, c_size_t,
         c_void_p)
    _sig(L.bpf_map__set_autocreate, c_int, c_void_p, ctypes.c_bool)
    _sig(L.libbpf_version_string, c_char_p)
    _sig(L.bpf_program__fd, c_int, c_void_p)
    _sig(L.bpf_link__destroy, c_int, c_void_p)
    _sig(L.bpf_link__pin, c_int, c_void_p, c_char_p)
    _sig(L.bpf_obj_pin, c_int, c_int, c_char_p)
    _sig(L.bpf_obj_get, c_int, c_char_p)
    _sig(L.bpf_map__name, c_char_p, c_void_p)
    _sig(L.bpf_map__fd, c_int, c_void_p)
    _sig(L.bpf_map__reuse_fd, c_int, c_void_p, c_int)
    _sig(L.bpf_map__set_max_entries, c_int, c_void_p, ctypes.c_uint32)
    _sig(L.bpf_map__max_entries, ctypes.c_uint32, c_void_p)
    _sig(L.bpf_map__key_size, ctypes.c_uint32, c_void_p)
    _sig(L.bpf_map__value_size, ctypes.c_uint32, c_void_p)
    _sig(L.bpf_map__type, c_int, c_void_p)
    _sig(L.bpf_map__initial_value, c_void_p, c_void_p, ctypes.POINTER(c_size_t))
    _sig(L.bpf_map_update_elem, c_int, c_int, c_void_p, c_void_p, ctypes.c_uint64)
    _sig(L.bpf_map_lookup_elem, c_int, c_int, c_void_p, c_void_p)
    _sig(L.bpf_map_delete_elem, c_int, c_int, c_void_p)
    _sig(L.bpf_map_get_next_key, c_int, c_int, c_void_p, c_void_p)
    _sig(L.libbpf_num_possible_cpus, c_int)
    _sig(L.bpf_object__btf, c_void_p, c_void_p)
    _sig(L.btf__find_by_name_kind, ctypes.c_int32, c_void_p, c_char_p, ctypes.c_uint32)
    _sig(L.btf__type_by_id, c_void_p, c_void_p, ctypes.c_uint32)
    _sig(L.btf__name_by_offset, c_char_p, c_void_p, ctypes.c_uint32)
    _sig(L.btf__load_vmlinux_btf, c_void_p)
    _sig(L.btf__free, None, c_void_p)
    _sig(L.libbpf_set_print, c_void_p, _PRINT_FN)

    keep_debug = bool(os.environ.get("VIGIL_LIBBPF_DEBUG"))

    def _printer(level, fmt, va):
        if level == LIBBPF_DEBUG and not keep_debug:
            return 0        # thousands a start (relocations, map creation): the refusals are warnings
        # one buffer for every message, large enough for a refused program's whole
        # verifier log (libbpf prints it as one message: the telling line is its last)
        with _print_lock:
            n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, va)
            text = ctypes.string_at(_print_buf, max(0, min(n, len(_print_buf) - 1)))
        text = text.decode(errors="replace").rstrip("\n")
        with _recent_lock:
            for line in text.split("\n"):
                _recent.append(line)
        if level == LIBBPF_WARN:
            log.debug("libbpf: %s", text)
        return 0

    _print_cb = _PRINT_FN(_printer)  # keep a reference for the life of the process
    L.libbpf_set_print(_print_cb)
    _lib = L
    return L


def take_log() -> list:
    """Return and clear libbpf's recent messages."""
    with _recent_lock:
        out = list(_recent)
        _recent.clear()
    return out


def explain(lines: list) -> str:
    """The most telling line of a libbpf/verifier log."""
    for pat in ("invalid", "unbounded", "out of bounds", "unknown func", "Unsupported",
                "not supported", "too large",
                "permission", "Permission", "R0 ", "misaligned", "failed to find", "failed"):
        for line in reversed(lines):
            if pat in line and "-- END PROG LOAD LOG --" not in line:
                return line.strip()
    return lines[-1].strip() if lines else ""


def _err(what: str, rc: int = None) -> BpfError:
    e = ctypes.get_errno()
    if rc is not None and rc < 0 and not e:
        e = -rc
    return BpfError(what, e or errno.EINVAL, explain(take_log()))


def num_possible_cpus() -> int:
    return lib().libbpf_num_possible_cpus()


class Map:
    """A loaded BPF map addressed by fd; keys and values are bytes-like/ctypes."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, map_type: int,
                 max_entries: int):
        self.name = name
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.type = map_type
        self.max_entries = max_entries

    PERCPU_TYPES = (5, 6, 10)  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

    @property
    def percpu(self) -> bool:
        return self.type in self.PERCPU_TYPES

    def _vsize(self) -> int:
        if self.percpu:
            return ((self.value_size + 7) // 8 * 8) * num_possible_cpus()
        return self.value_size

    @staticmethod
    def _buf(data, size):
        if isinstance(data, (bytes, bytearray)):
            if len(data) != size:
                raise ValueError(f"expected {size} bytes, got {len(data)}")
            return ctypes.create_string_buffer(bytes(data), size)
        return data

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        k = self._buf(key, self.key_size)
        v = self._buf(value, self._vsize())
        rc = lib().bpf_map_update_elem(self.fd, ctypes.byref(k), ctypes.byref(v), flags)
        if rc < 0:
            raise _err(f"update map {self.name}", rc)

    def lookup(self, key):
        """Value bytes, or None if the key is absent."""
        k = self._buf(key, self.key_size)
        v = ctypes.create_string_buffer(self._vsize())
        rc = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(k), ctypes.byref(v))
        if rc < 0:
            if ctypes.get_errno() == errno.ENOENT:
                return None
            raise _err(f"lookup map {self.name}", rc)
        return v.raw

    def delete(self, key) -> bool:
        k = self._buf(key, self.key_size)
        rc = lib().bpf_map_delete_elem(self.fd, ctypes.byref(k))
        if rc < 0:
            if ctypes.get_errno() == errno.ENOENT:
                return False
            raise _err(f"delete from map {self.name}", rc)
        return True

    def keys(self):
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        L = lib()
        while True:
            rc = L.bpf_map_get_next_key(self.fd, None if cur is None else ctypes.byref(cur),
                                        ctypes.byref(nxt))
            if rc < 0:
                return
            yield nxt.raw
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)

    def items(self):
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def clear(self) -> None:
        for k in list(self.keys()):
            self.delete(k)

    def percpu_values(self, key) -> list:
        """For per-CPU maps: the value bytes of each CPU."""
        raw = self.lookup(key)
        if raw is None:
            return []
        step = (self.value_size + 7) // 8 * 8
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]


def pin_fd(fd: int, path: str) -> None:
    """Pin a map or program fd at a bpffs path."""
    rc = lib().bpf_obj_pin(fd, path.encode())
    if rc < 0:
        raise _err(f"pin at {path}", rc)


def pinned_fd(path: str) -> int:
    """An fd for the object pinned at path (a map, program or link)."""
    fd = lib().bpf_obj_get(path.encode())
    if fd < 0:
        raise _err(f"open pinned {path}", fd)
    return fd


class Program:
    def __init__(self, obj: "BpfObject", ptr: int):
        self._obj = obj
        self.ptr = ptr
        self.name = lib().bpf_program__name(ptr).decode()
        self.section = lib().bpf_program__section_name(ptr).decode()

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self.ptr))

    @autoload.setter
    def autoload(self, on: bool) -> None:
        lib().bpf_program__set_autoload(self.ptr, bool(on))

    def attach(self) -> "Link":
        ptr = lib().bpf_program__attach(self.ptr)
        if not ptr:
            raise _err(f"attach {self.name} ({self.section})")
        return Link(ptr, self.name)

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self.ptr)

    def attach_cgroup(self, cgroup_fd: int) -> "Link":
        """Attach a cgroup program (sock_addr, cgroup_skb ...) to the cgroup
        open at cgroup_fd, as a BPF link (multi-attach: other programs on the
        same hook keep running)."""
        ptr = lib().bpf_program__attach_cgroup(self.ptr, cgroup_fd)
        if not ptr:
            raise _err(f"attach {self.name} ({self.section}) to a cgroup")
        return Link(ptr, self.name)

    def attach_uprobe(self, binary: str, func: str, pid: int = -1,
                      retprobe: bool = False) -> "Link":
        """Attach a uprobe at the entry of ``func`` (a symbol of ``binary``,
        which libbpf resolves from the file's ELF symbols), or with
        ``retprobe`` a uretprobe at its return, in process ``pid`` only
        (-1: every process that maps the file, now or later)."""
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), func_name=func.encode(),
                           retprobe=bool(retprobe))
        take_log()
        ptr = lib().bpf_program__attach_uprobe_opts(self.ptr, pid, binary.encode(), 0,
                                                     ctypes.byref(opts))
        if not ptr:
            what = "uretprobe" if retprobe else "uprobe"
            raise _err(f"attach {self.name} as {what} to {binary}:{func}")
        return Link(ptr, self.name)

    def attach_uprobe_at(self, binary: str, offset: int, retprobe: bool = False,
                         pid: int = -1) -> "Link":
        """Attach a uprobe (or uretprobe) at file offset ``offset`` of
        ``binary`` through a perf event this binding opens, so that the link
        owns it: ``Link.destroy`` hands back its last reference, whose close
        is what waits for the kernel to remove the probe (vigil.kernel.detach)."""
        what = (f"attach {self.name} as {'uretprobe' if retprobe else 'uprobe'} to "
                f"{binary}+{offset:#x}")
        pfd = _perf_event_open_uprobe(binary, offset, retprobe, pid)
        if pfd < 0:
            raise BpfError(what, -pfd)
        take_log()
        ptr = lib().bpf_program__attach_perf_event(self.ptr, pfd)
        if not ptr:
            err = _err(what)
            os.close(pfd)
            raise err
        return Link(ptr, self.name, perf_fd=pfd)

    def attach_tracepoint(self, tracefs: str, category: str, event: str) -> "Link":
        """Attach to a tracepoint whose id is read from *our* tracefs mount
        (libbpf only looks at /sys/kernel/tracing or /sys/kernel/debug/tracing)."""
        what = f"attach {self.name} ({self.section})"
        try:
            with open(os.path.join(tracefs, "events", category, event, "id")) as f:
                tp_id = int(f.read().strip())
        except OSError as e:
            raise BpfError(what, e.errno or errno.ENOENT) from None
        except ValueError:
            raise BpfError(what, errno.EINVAL) from None
        pfd = _perf_event_open_tracepoint(tp_id)
        if pfd < 0:
            raise BpfError(what, -pfd)
        ptr = lib().bpf_program__attach_perf_event(self.ptr, pfd)
        if not ptr:
            err = _err(what)
            os.close(pfd)
            raise err
        return Link(ptr, self.name, perf_fd=pfd)  # the link owns pfd: destroy closes it


_NR_PERF_EVENT_OPEN = 298     # x86_64
_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 8
_PERF_ATTR_SIZE_VER0 = 64


def _perf_event_open_tracepoint(tp_id: int) -> int:
    """perf_event_open(2) for one tracepoint on CPU 0, all processes (as libbpf
    does for BPF tracepoint programs); returns the fd or -errno."""
    lib()
    attr = ctypes.create_string_buffer(_PERF_ATTR_SIZE_VER0)
    # type, size, config, sample_period; wakeup_events at offset 48
    struct.pack_into("<IIQQ", attr, 0, _PERF_TYPE_TRACEPOINT, _PERF_ATTR_SIZE_VER0, tp_id, 1)
    struct.pack_into("<I", attr, 48, 1)
    fd = _libc.syscall(ctypes.c_long(_NR_PERF_EVENT_OPEN), attr, c_int(-1), c_int(0), c_int(-1),
                       ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        return -(ctypes.get_errno() or errno.EINVAL)
    return fd


_PERF_ATTR_SIZE_VER1 = 72     # with config1 (the uprobe's path) and config2 (its offset)
_UPROBE_PMU = "/sys/bus/event_source/devices/uprobe"


def _uprobe_pmu() -> tuple:
    """(PMU type, retprobe bit) of the kernel's uprobe PMU, or raises OSError."""
    with open(os.path.join(_UPROBE_PMU, "type")) as f:
        pmu = int(f.read().strip())
    bit = 0
    try:
        with open(os.path.join(_UPROBE_PMU, "format", "retprobe")) as f:
            bit = int(f.read().strip().split(":", 1)[1])     # "config:0"
    except (OSError, ValueError, IndexError):
        pass
    return pmu, bit


def _perf_event_open_uprobe(path: str, offset: int, retprobe: bool, pid: int) -> int:
    """perf_event_open(2) for a uprobe at path+offset (as libbpf does without
    tracefs); the fd or -errno."""
    lib()
    try:
        pmu, bit = _uprobe_pmu()
    except (OSError, ValueError):
        return -errno.ENOENT      # no uprobe PMU: a kernel without CONFIG_UPROBE_EVENTS
    cpath = ctypes.create_string_buffer(path.encode())
    attr = ctypes.create_string_buffer(_PERF_ATTR_SIZE_VER1)
    # type, size, config (retprobe bit), sample_period; config1 at 56, config2 at 64
    struct.pack_into("<IIQQ", attr, 0, pmu, _PERF_ATTR_SIZE_VER1,
                     (1 << bit) if retprobe else 0, 1)
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(cpath), offset)
    fd = _libc.syscall(ctypes.c_long(_NR_PERF_EVENT_OPEN), attr, c_int(pid if pid >= 0 else -1),
                       c_int(0 if pid < 0 else -1), c_int(-1),
                       ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        return -(ctypes.get_errno() or errno.EINVAL)
    return fd


BTF_KIND_PTR, BTF_KIND_TYPEDEF, BTF_KIND_FUNC_PROTO, BTF_KIND_DATASEC = 2, 8, 13, 15


class _BtfType(ctypes.Structure):
    """struct btf_type (the size/type union as one member)."""
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32),
                ("size", ctypes.c_uint32)]


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts (libbpf 1.x)."""
    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", ctypes.c_uint64),
                ("retprobe", ctypes.c_bool), ("func_name", c_char_p)]


_TP_ARITY: dict = {}


def tp_btf_arity(*tracepoints: str) -> dict:
    """{tracepoint: the number of arguments of the kernel's BTF tracepoint
    (``btf_trace_<name>``, the hidden ``void *`` first one not counted), or None
    when the kernel's BTF does not have it (or there is no kernel BTF)}; the
    kernel's BTF is read once for all of them, and the answers cached."""
    todo = [t for t in tracepoints if t not in _TP_ARITY]
    if todo:
        L = lib()
        btf = L.btf__load_vmlinux_btf()
        try:
            for tp in todo:
                _TP_ARITY[tp] = _arity(L, btf, tp) if btf else None
        finally:
            if btf:
                L.btf__free(btf)
    return {t: _TP_ARITY[t] for t in tracepoints}


def _arity(L, btf, tracepoint: str):
    tid = L.btf__find_by_name_kind(btf, f"btf_trace_{tracepoint}".encode(), BTF_KIND_TYPEDEF)
    if tid <= 0:
        return None
    t = _BtfType.from_address(L.btf__type_by_id(btf, tid))          # typedef -> pointer
    t = _BtfType.from_address(L.btf__type_by_id(btf, t.size))
    if (t.info >> 24) & 0x1f != BTF_KIND_PTR:
        return None
    t = _BtfType.from_address(L.btf__type_by_id(btf, t.size))
    if (t.info >> 24) & 0x1f != BTF_KIND_FUNC_PROTO:
        return None
    return (t.info & 0xffff) - 1


def version() -> str:
    """libbpf's version ("v1.1")."""
    return lib().libbpf_version_string().decode()


class Link:
    def __init__(self, ptr: int, name: str, perf_fd: Optional[int] = None):
        self.ptr = ptr
        self.name = name
        self.perf_fd = perf_fd      # the tracepoint perf event the link owns, if any

    def pin(self, path: str) -> None:
        """Pin in bpffs: the link (and its program) stays attached after this
        process exits, until the pin is removed."""
        rc = lib().bpf_link__pin(self.ptr, path.encode())
        if rc < 0:
            raise _err(f"pin link {self.name} at {path}", rc)

    def destroy(self) -> Optional[int]:
        """Detach.  For a link on a perf event (a tracepoint, a uprobe),
        returns a duplicate of the event's fd, its last reference: closing it
        waits for the kernel to unregister the probe (vigil.kernel.detach)."""
        keep = None
        if self.ptr:
            if self.perf_fd is not None:
                try:
                    keep = os.dup(self.perf_fd)
                except OSError:
                    keep = None
            lib().bpf_link__destroy(self.ptr)
            self.ptr = None
        return keep


class BpfObject:
    """One opened (and later loaded) BPF object file."""

    def __init__(self, path: str):
        self.path = path
        L = lib()
        take_log()
        ptr = L.bpf_object__open_file(path.encode(), None)
        if not ptr:
            raise _err(f"open {path}")
        self.ptr = ptr
        self.loaded = False

    def programs(self) -> list:
        out, p = [], None
        L = lib()
        while True:
            p = L.bpf_object__next_program(self.ptr, p)
            if not p:
                return out
            out.append(Program(self, p))

    def _map_ptrs(self):
        p = None
        L = lib()
        while True:
            p = L.bpf_object__next_map(self.ptr, p)
            if not p:
                return
            yield L.bpf_map__name(p).decode(), p

    def _map_ptr(self, name: str):
        p = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not p:
            raise KeyError(f"{os.path.basename(self.path)}: no map {name!r}")
        return p

    def map_names(self) -> list:
        return [name for name, _p in self._map_ptrs()]

    def reuse_map(self, name: str, fd: int) -> None:
        rc = lib().bpf_map__reuse_fd(self._map_ptr(name), fd)
        if rc < 0:
            raise _err(f"reuse map {name}", rc)

    def set_autocreate(self, name: str, on: bool) -> None:
        """Whether load creates map ``name`` (off: no program using it may load)."""
        rc = lib().bpf_map__set_autocreate(self._map_ptr(name), bool(on))
        if rc < 0:
            raise _err(f"autocreate map {name}", rc)

    def set_max_entries(self, name: str, n: int) -> None:
        rc = lib().bpf_map__set_max_entries(self._map_ptr(name), n)
        if rc < 0:
            raise _err(f"resize map {name}", rc)

    def rodata(self) -> ctypes.Array:
        """The writable .rodata image before load (set `const volatile` globals)."""
        for name, p in self._map_ptrs():
            if name.endswith(".rodata"):
                size = c_size_t()
                addr = lib().bpf_map__initial_value(p, ctypes.byref(size))
                if not addr:
                    raise BpfError("rodata", errno.ENOENT)
                return (ctypes.c_char * size.value).from_address(addr)
        raise KeyError("object has no .rodata")

    def section_vars(self, section: str) -> dict:
        """{variable: (offset, size)} of a data section (".rodata"), from the
        object's BTF as libbpf laid it out at open; {} without one."""
        L = lib()
        btf = L.bpf_object__btf(self.ptr)
        if not btf:
            return {}
        sid = L.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if sid < 0:
            return {}
        addr = L.btf__type_by_id(btf, sid)
        vlen = _BtfType.from_address(addr).info & 0xffff
        out = {}
        for v in (_BtfVarSecinfo * vlen).from_address(addr + ctypes.sizeof(_BtfType)):
            var = _BtfType.from_address(L.btf__type_by_id(btf, v.type))
            out[L.btf__name_by_offset(btf, var.name_off).decode()] = (v.offset, v.size)
        return out

    def set_const(self, name: str, value: bytes) -> None:
        """Set a `const volatile` global before load; KeyError if the object has
        none of that name, ValueError if the size differs."""
        where = self.section_vars(".rodata").get(name)
        if where is None:
            raise KeyError(f"{os.path.basename(self.path)}: no .rodata variable {name!r}")
        off, size = where
        if len(value) != size:
            raise ValueError(f"{name}: {size} bytes, got {len(value)}")
        ro = self.rodata()
        ro[off:off + size] = value

    def load(self) -> None:
        take_log()
        rc = lib().bpf_object__load(self.ptr)
        if rc < 0:
            raise _err(f"load {os.path.basename(self.path)}", rc)
        self.loaded = True

    def map(self, name: str) -> Map:
        L = lib()
        p = self._map_ptr(name)
        return Map(name, L.bpf_map__fd(p), L.bpf_map__key_size(p), L.bpf_map__value_size(p),
                   L.bpf_map__type(p), L.bpf_map__max_entries(p))

    def close(self) -> None:
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None

    def __del__(self):  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass
