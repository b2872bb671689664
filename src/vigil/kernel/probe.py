"""What this kernel accepts, learnt by loading: one tiny program per hook type
(``bpf/probes/probes.bpf.c``), each loaded alone and, where loading alone
proves little (kprobe, fentry and LSM programs can load where they cannot
attach), attached for a moment and detached.  `vigil doctor` reports it."""
from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass
from typing import Optional

from vigil.kernel import libbpf
from vigil.kernel.sensors import bpf_dir

PROBES_OBJECT = "probes.o"
RING_MAP = "probe_ring"
MAPS_OF = {"ringbuf": ("probe_ring",), "sock_task_storage": ("probe_task",)}  # else none


@dataclass(frozen=True)
class Hook:
    name: str           # hook type, as reported
    program: str        # its program in probes.bpf.c
    what: str           # plain words
    attach: str         # how to attach it for a moment: "auto", "tracepoint", "cgroup",
    #                     "uprobe"; "" = loading is the probe


HOOKS = (
    Hook("tracepoint", "probe__tracepoint", "syscall tracepoints (tp/syscalls/*)", "tracepoint"),
    Hook("tp_btf", "probe__tp_btf", "BTF tracepoints (tp_btf/sched_process_exec)", "auto"),
    Hook("raw_tp", "probe__raw_tp", "raw tracepoints (raw_tp/sched_process_exec)", "auto"),
    Hook("kprobe", "probe__kprobe", "kprobes (kprobe/do_sys_openat2)", "auto"),
    Hook("fentry", "probe__fentry", "fentry trampolines (fentry/do_sys_openat2)", "auto"),
    Hook("lsm", "probe__lsm", "BPF LSM (lsm/file_open)", "auto"),
    Hook("fentry_file", "probe__fentry_file", "fentry on security_file_open", "auto"),
    Hook("fmod_ret", "probe__fmod_ret", "fmod_ret on security_file_open (return override)",
         "auto"),
    Hook("cgroup_sock_addr", "probe__cgroup_sock_addr",
         "cgroup socket address hooks (cgroup/connect4) at the cgroup v2 root", "cgroup"),
    Hook("sock_task_storage", "probe__sock_task_storage",
         "task storage in cgroup/connect4 (process selectors)", ""),
    Hook("cgroup_skb", "probe__cgroup_skb", "cgroup packet hooks (cgroup_skb/ingress)", "cgroup"),
    Hook("uprobe", "probe__uprobe", "uprobes (libc getpid, this process only)", "uprobe"),
    Hook("ringbuf", "probe__ringbuf", "BPF ring buffer (map and bpf_ringbuf_output)", ""),
    Hook("send_signal", "probe__send_signal", "bpf_send_signal helper", ""),
)


@dataclass
class HookResult:
    hook: str
    what: str
    loaded: bool = False
    attached: Optional[bool] = None     # None: not tried (loading is the probe)
    error: str = ""

    @property
    def available(self) -> bool:
        return self.loaded and self.attached is not False

    def as_dict(self) -> dict:
        return {**asdict(self), "available": self.available}


def probes_path() -> str:
    return str(bpf_dir() / PROBES_OBJECT)


def _libc_path() -> str:
    """The C library this process runs with (from its own memory map)."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.rstrip("\n").split(None, 5)[-1]
            if os.path.basename(path).startswith("libc.so"):
                return path
    raise FileNotFoundError("libc.so is not mapped")


LSM_LIST = "/sys/kernel/security/lsm"


def active_lsms() -> Optional[list]:
    """The LSMs this kernel runs: securityfs's list, else the boot's lsm=,
    else the kernel's built-in CONFIG_LSM; None when none can be read."""
    try:
        with open(LSM_LIST) as f:
            return [x for x in f.read().strip().split(",") if x]
    except OSError:
        pass
    try:
        with open("/proc/cmdline") as f:
            for arg in f.read().split():
                if arg.startswith("lsm="):
                    return [x for x in arg[4:].split(",") if x]
    except OSError:
        pass
    try:
        with open(f"/boot/config-{os.uname().release}") as f:
            for line in f:
                if line.startswith("CONFIG_LSM="):
                    return [x for x in line.split("=", 1)[1].strip().strip('"').split(",") if x]
    except OSError:
        pass
    return None


def lsm_reason(lsms: Optional[list] = None) -> str:
    """Why BPF LSM programs cannot work here, when the LSM list says it
    ("" when bpf is active or the list cannot be read)."""
    lsms = active_lsms() if lsms is None else lsms
    if lsms is None or "bpf" in lsms:
        return ""
    return f"BPF LSM not enabled (lsm= lacks bpf; active: {','.join(lsms) or 'none'})"


def explain_refusal(e: BaseException, stage: str) -> str:
    """One line: at which stage the kernel said no, and what it said."""
    if not isinstance(e, libbpf.BpfError):
        return f"{stage} failed: {e}"
    detail = (e.details or "").removeprefix("libbpf: ")
    # libbpf blames RLIMIT_MEMLOCK for any EPERM; since 5.11 memory is counted by memcg
    if "ulimit" in detail or "-- BEGIN" in detail:
        detail = ""
    if e.errno == errno.EPERM and stage == "load" and not detail:
        detail = "the kernel refuses this program type here"
    return f"{stage} refused: {os.strerror(e.errno)}{' (' + detail + ')' if detail else ''}"


_why = explain_refusal


def _attach(prog, hook: Hook, tracefs: str, cgroup_root: Optional[str]) -> libbpf.Link:
    if hook.attach == "tracepoint":
        return prog.attach_tracepoint(tracefs, "syscalls", "sys_enter_getppid")
    if hook.attach == "cgroup":
        if not cgroup_root:
            raise libbpf.BpfError("attach to the cgroup v2 root (no cgroup v2 mounted)",
                                  errno.ENOENT)
        fd = os.open(cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return prog.attach_cgroup(fd)
        finally:
            os.close(fd)
    if hook.attach == "uprobe":
        return prog.attach_uprobe(_libc_path(), "getpid", os.getpid())
    return prog.attach()


def probe_hook(hook: Hook, tracefs: str, cgroup_root: Optional[str],
               path: Optional[str] = None) -> HookResult:
    """Load ``hook``'s program alone (and attach it for a moment when the
    hook says so)."""
    res = HookResult(hook.name, hook.what)
    try:
        obj = libbpf.BpfObject(path or probes_path())
    except (libbpf.BpfError, libbpf.LibbpfMissing) as e:
        res.error = _why(e, "open")
        return res
    try:
        for p in obj.programs():
            p.autoload = p.name == hook.program
        for name in ("probe_ring", "probe_task"):
            if name not in MAPS_OF.get(hook.name, ()):
                obj.set_autocreate(name, False)
        obj.load()
        res.loaded = True
        if hook.attach:
            prog = next(p for p in obj.programs() if p.name == hook.program)
            link = _attach(prog, hook, tracefs, cgroup_root)
            link.destroy()
            res.attached = True
            if hook.name == "lsm" and lsm_reason():
                # it loads and attaches, but the kernel never calls it
                res.attached = False
                res.error = f"{lsm_reason()}: the program attaches but is never called"
    except (libbpf.BpfError, OSError) as e:
        res.error = _why(e, "attach" if res.loaded else "load")
        if res.loaded:
            res.attached = False
        if hook.name == "lsm" and lsm_reason():
            res.error = f"{lsm_reason()}: {res.error}"
    finally:
        obj.close()
    return res


def probe_all(tracefs: str, cgroup_root: Optional[str]) -> list:
    """Every hook type, in HOOKS order."""
    return [probe_hook(h, tracefs, cgroup_root) for h in HOOKS]


__all__ = ["HOOKS", "Hook", "HookResult", "probe_hook", "probe_all", "probes_path",
           "explain_refusal", "lsm_reason", "active_lsms"]
