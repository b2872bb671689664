"""The Falco event types each vigil event kind stands for, and what follows
from that (the kind of an event type, the kinds rules can match, evt.dir,
evt.category).  Every rules module takes these names from here."""
from __future__ import annotations

from vigil.events import Kind

# The Falco event type names each vigil kind can stand for.  The first name is
# the default when the event does not say which syscall produced it.
KIND_TYPES = {
    Kind.EXEC: ("execve", "execveat"),
    Kind.EXIT: ("procexit",),
    Kind.FORK: ("clone", "clone3", "fork", "vfork"),
    Kind.OPEN: ("openat", "open", "openat2", "creat"),
    Kind.CONNECT: ("connect",),
    Kind.ACCEPT: ("accept4", "accept"),
    Kind.LISTEN: ("listen",),
    Kind.BIND: ("bind",),
    Kind.CLOSE: ("close",),
    Kind.DNS: ("sendto", "sendmsg", "sendmmsg"),
    Kind.UNLINK: ("unlinkat", "unlink", "rmdir"),
    Kind.RENAME: ("renameat2", "rename", "renameat"),
    Kind.LINK: ("linkat", "link"),
    Kind.SYMLINK: ("symlinkat", "symlink"),
    Kind.MKDIR: ("mkdirat", "mkdir"),
    Kind.CHMOD: ("fchmodat", "chmod", "fchmod"),
    Kind.PTRACE: ("ptrace",),
    Kind.MODULE: ("finit_module", "init_module"),
    Kind.DUP: ("dup2", "dup", "dup3"),
    Kind.MEMFD: ("memfd_create",),
    Kind.SETUID: ("setuid",),
    Kind.CGROUP_MKDIR: (),
    Kind.CGROUP_RMDIR: (),
}
KIND_TYPE_SETS = {k: frozenset(v) for k, v in KIND_TYPES.items()}
TYPE_TO_KIND = {name: k for k, names in KIND_TYPES.items() for name in names}
PRODUCED_TYPES = frozenset(TYPE_TO_KIND)
RULE_KINDS = tuple(k for k in Kind if KIND_TYPES[k])

# evt.dir: vigil events are complete syscalls.  Falco rules look at the exit
# ("<") of most syscalls but at the enter (">") of ptrace, so a ptrace event
# answers to both directions.
KIND_DIRS = {k: frozenset(("<",)) for k in Kind}
KIND_DIRS[Kind.PTRACE] = frozenset(("<", ">"))

CATEGORY = {
    Kind.EXEC: "process", Kind.EXIT: "process", Kind.FORK: "process", Kind.PTRACE: "process",
    Kind.OPEN: "file", Kind.CLOSE: "file", Kind.UNLINK: "file", Kind.RENAME: "file",
    Kind.LINK: "file", Kind.SYMLINK: "file", Kind.MKDIR: "file", Kind.CHMOD: "file",
    Kind.DUP: "file", Kind.MEMFD: "memory",
    Kind.CONNECT: "net", Kind.ACCEPT: "net", Kind.LISTEN: "net", Kind.BIND: "net",
    Kind.DNS: "net", Kind.MODULE: "system", Kind.SETUID: "user",
    Kind.CGROUP_MKDIR: "other", Kind.CGROUP_RMDIR: "other",
}
