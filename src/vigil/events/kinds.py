"""The registry of event kinds: everything vigil knows about a kind, in one entry.

An entry (:class:`KindSpec`) says

* ``name``: the label (``open``); the C enum member is ``EV_<NAME>`` of
  ``enum ev_kind`` in ``kernel/bpf/events.h``, with value ``value``;
* ``sensor``: the BPF object (``kernel/bpf/<sensor>.bpf.c``) whose programs
  serve it; those programs are named ``<name>__...``; ``also_sensors``: other
  objects with programs for it (io_uring opens are open events);
* ``layout`` and ``decoder``: the ctypes mirror of the C struct the kernel
  sends it in (vigil.events.structs, or defined beside the entry) and the
  Decoder method that reads it; without one, the generic decoder sets an
  event field per member of the layout (char arrays as text, names starting
  with ``_`` skipped), and those fields are Event fields (capture, replay,
  ``to_dict``) without further edits;
* ``falco_types``, ``dirs``, ``category``: what Falco rules see (``evt.type``
  names it stands for, the first being the default; ``evt.dir``;
  ``evt.category``);
* ``trace``: the groups of ``vigil trace`` (``file``, ``net``) listing it;
  ``all`` lists every kind but the cgroup bookkeeping ones (an enforcement
  kind in it attaches nothing: only vigil.enforce loads those programs);
* ``bookkeeping``: ``lifecycle`` (the process table needs it whatever was
  asked for), ``cgroup`` (the container resolver needs it), ``enforce``
  (a verdict of vigil.enforce, whose programs only the enforcement manager
  loads and attaches) or ``l7`` (chunks vigil.l7 reads from a ring of their
  own, not events);
* ``derived_from``: a kind user space makes from another's events (``http``
  from ``l7``): it has no programs; asking for it asks the kernel for that one;
* ``json`` and ``detail``: its own keys in ``vigil trace --json`` and its
  DETAILS column.

``Kind`` (an IntEnum) is built from the entries.  Adding a kind is: its
kernel program, its C enum value (and struct, if it has a new one), one entry
here, and its tests.  tests/test_kinds.py checks the entries against the
objects' BTF (enum values, layouts) and their programs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Optional

from vigil.events import structs as S
from vigil.events.render import args_text, hostport, open_flags, ret_text

EV_MAX = 64          # enum ev_kind's EV_MAX: kinds are below it (the kernel's stats map)
# enum ev_record: high-priority ring records that are not events (a process
# lost events: struct ev_loss); a value no kind has
RECORDS = {"REC_LOSS": 39}
REC_LOSS = RECORDS["REC_LOSS"]

# enum ev_syscall in kernel/bpf/events.h, in order (SC_<NAME> = index): which
# syscall produced an event.  tests/test_kinds.py checks the C enum against it.
SYSCALLS = (
    None, "open", "openat", "openat2", "creat",
    "connect", "accept", "accept4", "listen", "bind", "close",
    "sendto", "sendmsg", "sendmmsg",
    "unlink", "unlinkat", "rmdir",
    "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat",
    "mkdir", "mkdirat", "chmod", "fchmodat",
    "ptrace", "init_module", "finit_module",
    "dup", "dup2", "dup3", "memfd_create", "setuid",
    "write",
    "open_by_handle_at", "io_uring_setup", "prctl",
)
# the members of enum ev_syscall from 100 on (SC_SETGID = 100, in order)
SYSCALLS_FROM_100 = (
    "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "capset", "setsid", "setpgid",
    "execve", "execveat",
)
# number -> name of every ev_syscall value
SYSCALL_NAMES = {**dict(enumerate(SYSCALLS)), **dict(enumerate(SYSCALLS_FROM_100, 100))}
# enum ev_syscall members of sysx.bpf.c, given explicit values in events.h (= 120 ...)
SYSCALLS_AT = {120: "socket", 121: "setns", 122: "unshare", 123: "bpf", 124: "userfaultfd",
               125: "fchmod"}
SYSCALL_NAMES.update(SYSCALLS_AT)

# enum open_via and enum open_watched in kernel/bpf/events.h (value = index):
# how an open was made (ev_open.via; None: an open syscall) and whether the
# opened file was recognised by identity (ev_open.watched: a watched file, or
# a file in a watched directory).  tests/test_kinds.py checks them too.
OPEN_VIA = (None, "io_uring")
OPEN_WATCHED = (None, "file", "dir")

TRACE_GROUPS_NAMED = ("file", "net")   # groups an entry lists itself in; "all" is implied
_EXIT_ONLY = frozenset(("<",))


@dataclass(frozen=True)
class KindSpec:
    name: str
    value: int
    sensor: str
    layout: type
    decoder: str = ""           # a Decoder method; "" = the generic one (members by name)
    falco_types: tuple = ()
    category: str = "other"
    dirs: frozenset = _EXIT_ONLY
    trace: tuple = ()
    bookkeeping: str = ""
    also_sensors: tuple = ()    # other objects with programs serving it
    json: tuple = ()            # "key", "key?" (only when set), "out=attr"
    derived_from: str = ""      # made in user space from this kind's events (no programs)
    detail: Optional[Callable] = None
    json_fields: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        fields = []
        for j in self.json:
            optional = j.endswith("?")
            j = j.rstrip("?")
            out, _, attr = j.partition("=")
            fields.append((out, attr or out, optional))
        object.__setattr__(self, "json_fields", tuple(fields))

    @property
    def kind(self) -> "Kind":
        return Kind(self.value)

    def trace_json(self, ev) -> dict:
        """The kind's own keys of ``vigil trace --json``."""
        out = {}
        for key, attr, optional in self.json_fields:
            v = getattr(ev, attr)
            if not optional or v:
                out[key] = v
        return out

    def trace_detail(self, ev) -> str:
        return self.detail(ev) if self.detail is not None else ""


# --- trace renderings shared by several kinds ---

_NET_JSON = ("syscall", "fd", "family", "proto", "saddr", "sport", "daddr", "dport", "ret", "path?")
_PATH2_JSON = ("syscall", "path", "ret", "path2?")


def _net_detail(e) -> str:
    if e.family == "AF_UNIX":
        return f"{e.syscall} unix {e.path or '-'} ret={ret_text(e.ret)}"
    return (f"{e.syscall} {e.proto} {hostport(e.saddr, e.sport)} -> "
            f"{hostport(e.daddr, e.dport)} ret={ret_text(e.ret)}")


def _two_paths_detail(e) -> str:
    return f"{e.syscall} {e.path} -> {e.path2} ret={ret_text(e.ret)}"


def _path_mode_detail(e) -> str:
    return f"{e.syscall} {e.path} mode={e.mode:#o} ret={ret_text(e.ret)}"


def _net(name, value, types, category="net", trace=("net",)):
    return KindSpec(name, value, "net", S.EvNet, "_net", types, category, trace=trace,
                    json=_NET_JSON, detail=_net_detail)


def _fsop(name, value, types, detail, json=_PATH2_JSON):
    return KindSpec(name, value, "fsops", S.EvPath2, "_path2", types, "file", trace=("file",),
                    json=json, detail=detail)


def _sys(name, value, types, category, json, detail, dirs=_EXIT_ONLY):
    return KindSpec(name, value, "sys", S.EvSys, "_sys", types, category, dirs, trace=(),
                    json=json, detail=detail)


_CRED_JSON = ("syscall", "ret", "cap_effective", "cap_permitted", "cap_inheritable", "sid",
              "vpgid")


def _cred(name, value, types, category, json, detail):
    return KindSpec(name, value, "creds", S.EvCred, "_cred", types, category, trace=(),
                    json=json + _CRED_JSON[1:], detail=detail)
def _verdict_detail(e) -> str:
    from vigil.enforce.events import describe
    return describe(e)


def _enforce(name, value, sensor, layout, category):
    # rules see verdicts as evt.type = net_verdict / exec_verdict
    return KindSpec(name, value, sensor, layout, falco_types=(name,), category=category,
                    bookkeeping="enforce",
                    json=("verdict", "policy", "ident", "direction"), detail=_verdict_detail)


def _sysx(name, value, types, category, json, detail):
    return KindSpec(name, value, "sysx", S.EvSys, "_sysx", types, category, trace=(),
                    json=json, detail=detail)


def _cgroup(name, value):
    return KindSpec(name, value, "cgroup", S.EvCgroup, "_cgroup", bookkeeping="cgroup")


KINDS = (
    KindSpec("exec", 1, "proc", S.EvExec, "_exec", ("execve", "execveat"), "process",
             bookkeeping="lifecycle", json=("args_truncated", "tty", "loginuid"),
             detail=lambda e: f"{e.exe} {args_text(e)}"),
    KindSpec("exit", 2, "proc", S.EvExit, "_exit", ("procexit",), "process",
             bookkeeping="lifecycle", json=("exit_code", "exit_signal"),
             detail=lambda e: f"code={e.exit_code}"
             + (f" signal={e.exit_signal}" if e.exit_signal else "")),
    KindSpec("fork", 3, "proc", S.EvFork, "_fork", ("clone", "clone3", "fork", "vfork"), "process",
             bookkeeping="lifecycle", json=("child_pid",),
             detail=lambda e: f"child={e.child_pid}"),
    # also served by the iouring sensor (IORING_OP_OPENAT/OPENAT2: via = "io_uring")
    KindSpec("open", 4, "file", S.EvOpen, "_open",
             ("openat", "open", "openat2", "creat", "open_by_handle_at"), "file",
             trace=("file",), also_sensors=("iouring",),
             json=("syscall", "path", "flags", "mode", "ret", "realpath?", "dev?", "ino?", "watched?",
                   "via?"),
             detail=lambda e: f"{e.syscall} {e.path} flags={open_flags(e.flags)} "
             f"ret={ret_text(e.ret)}"
             + (f" real={e.realpath}" if e.realpath and e.realpath != e.path else "")
             + (f" via={e.via}" if e.via else "")),
    _net("connect", 5, ("connect",)),
    _net("accept", 6, ("accept4", "accept")),
    _net("listen", 7, ("listen",)),
    _net("bind", 8, ("bind",)),
    _net("close", 9, ("close",), category="file"),
    KindSpec("dns", 10, "dns", S.EvDns, "_dns", ("sendto", "sendmsg", "sendmmsg"), "net",
             trace=("net",), json=("syscall", "query", "qtype", "daddr", "dport"),
             detail=lambda e: f"{e.qtype} {e.query} -> {hostport(e.daddr, e.dport)}"),
    _fsop("unlink", 11, ("unlinkat", "unlink", "rmdir"), _path_mode_detail),
    _fsop("rename", 12, ("renameat2", "rename", "renameat"), _two_paths_detail),
    _fsop("link", 13, ("linkat", "link"), _two_paths_detail),
    _fsop("symlink", 14, ("symlinkat", "symlink"), _two_paths_detail),
    _fsop("mkdir", 15, ("mkdirat", "mkdir"), _path_mode_detail, json=_PATH2_JSON + ("mode",)),
    _fsop("chmod", 16, ("fchmodat", "chmod"), _path_mode_detail,
          json=_PATH2_JSON + ("mode",)),
    # Falco rules look at the exit ("<") of most syscalls but at the enter (">")
    # of ptrace: a vigil event is a whole syscall, so it answers to both
    _sys("ptrace", 17, ("ptrace",), "process", ("request", "target_pid", "ret"),
         lambda e: f"request={e.request} target={e.target_pid} ret={ret_text(e.ret)}",
         dirs=frozenset(("<", ">"))),
    _sys("module", 18, ("finit_module", "init_module"), "system", ("syscall", "path", "ret"),
         lambda e: f"{e.syscall} {e.path or ''} ret={ret_text(e.ret)}"),
    _sys("dup", 19, ("dup2", "dup", "dup3"), "file",
         ("syscall", "fd", "newfd", "fd_type", "ret", "saddr", "sport", "daddr", "dport"),
         lambda e: f"{e.syscall} fd={e.fd}({e.fd_type}) -> {e.newfd} ret={ret_text(e.ret)}"),
    _sys("memfd", 20, ("memfd_create",), "memory", ("name=path", "flags", "ret"),
         lambda e: f"name={e.path} ret={ret_text(e.ret)}"),
    _cred("setuid", 21, ("setuid",), "user", ("new_uid",),
          lambda e: f"uid={e.new_uid} ret={ret_text(e.ret)}"),
    _cgroup("cgroup_mkdir", 22),
    _cgroup("cgroup_rmdir", 23),
    KindSpec("io_uring_setup", 24, "iouring", S.EvSys, "_sys", ("io_uring_setup",), "other",
             json=("fd", "entries", "flags", "ret"),
             detail=lambda e: f"fd={e.fd} entries={e.entries} flags={e.flags:#x}"),
    # a task renamed itself (prctl PR_SET_NAME) or was renamed (/proc/<pid>/comm)
    KindSpec("prctl", 25, "proc", S.EvRename, "_rename", ("prctl",), "process",
             json=("target_pid", "old_name", "new_name"),
             detail=lambda e: f"{e.old_name} -> {e.new_name}"
             + (f" (pid {e.target_pid})" if e.target_pid != e.pid else "")),
    # kernel/bpf/l7.bpf.c (and the TLS uprobes through l7.h): chunks of L7
    # traffic, read by vigil.l7 from their own ring (l7_events), not events
    # for rules; the http kind is made from them in user space (vigil.l7)
    KindSpec("l7", 26, "l7", S.EvL7, "", (), "net", bookkeeping="l7"),
    KindSpec("http", 27, "l7", S.EvL7, "", ("http",), "net", derived_from="l7",
             json=("method", "path", "status", "duration"),
             detail=lambda e: f"{e.method} {e.path} -> {e.status} {e.duration * 1000:.1f}ms"),
    # the capability sets and session / process-group ids change: the events
    # carry them after the call (vigil.state.proctable keeps them)
    _cred("capset", 40, ("capset",), "user", ("syscall",),
          lambda e: f"eff={e.cap_effective:#x} ret={ret_text(e.ret)}"),
    _cred("setid", 41, ("setgid", "setresuid", "setresgid", "setreuid", "setregid",
                        "setfsuid", "setfsgid"), "user", ("syscall", "id_args"),
          lambda e: f"{e.syscall}({', '.join(map(str, e.id_args))}) ret={ret_text(e.ret)}"),
    _cred("session", 42, ("setsid", "setpgid"), "process", ("syscall", "id_args"),
          lambda e: f"{e.syscall} sid={e.sid} pgid={e.vpgid} ret={ret_text(e.ret)}"),
    # an execve/execveat that failed (ret < 0): what was asked for.  Rules see
    # successful execs only (Kind.EXEC), so no Falco types.
    KindSpec("execfail", 43, "proc", S.EvExecfail, "_execfail", (), "process",
             json=("syscall", "path", "args", "args_truncated", "ret"),
             detail=lambda e: f"{e.path} {args_text(e)} ret={ret_text(e.ret)}"),
    # kernel/bpf/sysx.bpf.c: syscalls only Falco's rules ask about
    _sysx("socket", 48, ("socket",), "net", ("domain=family", "sock_type", "proto", "ret"),
          lambda e: f"domain={e.family} type={e.sock_type} proto={e.proto} ret={ret_text(e.ret)}"),
    _sysx("setns", 49, ("setns",), "process", ("fd", "nstype", "path?", "ret"),
          lambda e: f"fd={e.fd}({e.path or '?'}) nstype={e.nstype} ret={ret_text(e.ret)}"),
    _sysx("unshare", 50, ("unshare",), "process", ("flags", "ret"),
          lambda e: f"flags={e.flags:#x} ret={ret_text(e.ret)}"),
    _sysx("bpf", 51, ("bpf",), "other", ("cmd", "ret"),
          lambda e: f"cmd={e.cmd} ret={ret_text(e.ret)}"),
    _sysx("userfaultfd", 52, ("userfaultfd",), "memory", ("flags", "ret"),
          lambda e: f"flags={e.flags:#x} ret={ret_text(e.ret)}"),
    _sysx("fchmod", 53, ("fchmod",), "file", ("fd", "path?", "mode", "ret"),
          lambda e: f"fd={e.fd}({e.path or '?'}) mode={e.mode:#o} ret={ret_text(e.ret)}"),
    # 60-63: enforcement verdicts (vigil.enforce); no enum ev_syscall values
    _enforce("net_verdict", 60, "enforce_net", S.EvNetVerdict, "net"),
    _enforce("exec_verdict", 61, "enforce_exec", S.EvExecVerdict, "process"),
)


class _KindBase(enum.IntEnum):
    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def spec(self) -> KindSpec:
        return SPECS[self]


Kind = _KindBase("Kind", [(s.name.upper(), s.value) for s in KINDS], module=__name__,
                 qualname="Kind")
Kind.__doc__ = "An event kind: the kernel's enum ev_kind, by name (built from KINDS)."

SPECS = {Kind(s.value): s for s in KINDS}
KIND_BY_NAME = {k.label: k for k in Kind}

# the BPF objects, in the order their kinds are listed
SENSORS = tuple(dict.fromkeys(x for s in KINDS for x in (s.sensor,) + s.also_sensors))

LIFECYCLE = frozenset(k for k, s in SPECS.items() if s.bookkeeping == "lifecycle")
CGROUP_KINDS = frozenset(k for k, s in SPECS.items() if s.bookkeeping == "cgroup")
ENFORCE_KINDS = frozenset(k for k, s in SPECS.items() if s.bookkeeping == "enforce")
L7_KINDS = frozenset(k for k, s in SPECS.items() if s.bookkeeping == "l7")
DERIVED = {k: KIND_BY_NAME[s.derived_from] for k, s in SPECS.items() if s.derived_from}


def kernel_kinds_for(kinds) -> set:
    """The kinds the kernel must deliver for these: a derived kind is asked
    for as the kind it is made from."""
    return {DERIVED.get(k, k) for k in kinds}

TRACE_GROUPS = {g: frozenset(k for k, s in SPECS.items() if g in s.trace)
                for g in TRACE_GROUPS_NAMED}
TRACE_GROUPS["all"] = frozenset(k for k in Kind if k not in CGROUP_KINDS and k not in L7_KINDS
                                and k not in DERIVED)

# --- what the rules need: evt.type, evt.dir, evt.category per kind ---

FALCO_TYPES = {k: s.falco_types for k, s in SPECS.items()}      # first name = default
KIND_DIRS = {k: s.dirs for k, s in SPECS.items()}
CATEGORIES = {k: s.category for k, s in SPECS.items()}
TYPE_TO_KIND = {name: k for k, names in FALCO_TYPES.items() for name in names}
PRODUCED_TYPES = frozenset(TYPE_TO_KIND)
RULE_KINDS = tuple(k for k in Kind if FALCO_TYPES[k])


def generic_fields() -> tuple:
    """Event fields the generic decoder sets: the members (after the header) of
    the layouts of entries without a decoder of their own."""
    from vigil.events.structs import flat_fields
    hdr = {name for name, _t, _o in flat_fields(S.EvHdr)}
    out = []
    for s in KINDS:
        if not s.decoder:
            out.extend(n for n, _t, _o in flat_fields(s.layout)
                       if not n.startswith("_") and n not in hdr and n not in out)
    return tuple(out)


def _check() -> None:
    values = [s.value for s in KINDS]
    names = [s.name for s in KINDS]
    if len(set(values)) != len(values) or len(set(names)) != len(names):
        raise ValueError("event kinds: duplicate name or value in KINDS")
    if set(values) & set(RECORDS.values()):
        raise ValueError("event kinds: a value is taken by an enum ev_record member")
    if not all(0 < v < EV_MAX for v in values):
        raise ValueError(f"event kinds: values must be in 1..{EV_MAX - 1}")
    for s in KINDS:
        if s.bookkeeping not in ("", "lifecycle", "cgroup", "enforce", "l7"):
            raise ValueError(f"event kind {s.name}: bookkeeping {s.bookkeeping!r}")
        if not set(s.trace) <= set(TRACE_GROUPS_NAMED):
            raise ValueError(f"event kind {s.name}: trace groups {s.trace!r}")


_check()
