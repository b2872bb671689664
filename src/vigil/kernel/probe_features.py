"""Which hook serves each vigil feature on this kernel, and why the others do
not: the feature table of `vigil doctor`.

A feature lists its *ways* best first: the hooks (vigil.kernel.probe) each
needs, how vigil does it that way, and whether taking it means less than the
best way (``degraded``, e.g. a kill at the open's exit instead of EPERM).  The
first way whose hooks all probed available serves; the report names it and
gives, for each other way, why it is not taken ("BPF LSM not enabled (lsm=
lacks bpf ...)", "load refused: ...", "not needed: ...").  ``extra`` ways are
hooks vigil deliberately does not use for the feature (a kprobe that would
see no more than the tracepoint that serves it): the report says why, and
whether this kernel has them.

The agent's own choice of hook follows the same order and the same kind of
probe (loading): the optional sensor programs (vigil.kernel.sensors
OPTIONAL) and the file-open hooks of vigil.enforce.kernel (FILE_HOOKS)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vigil.kernel import node


@dataclass(frozen=True)
class Way:
    how: str                # how vigil does it this way (shown)
    hooks: tuple            # hook types it needs (all of them)
    degraded: str = ""      # what is less than the best way ("" = full)
    tracepoints: tuple = ()  # syscall tracepoints it needs (any one is enough)


@dataclass(frozen=True)
class Feature:
    name: str
    ways: tuple             # Way, best first
    cgroup_v2: bool = False
    bpffs: bool = False
    required: bool = False  # the agent cannot run without it
    extra: tuple = field(default=())   # (how, hook, why vigil does not use it)


TP = "tracepoint"
FEATURES = (
    Feature("event transport", (Way("BPF ring buffer", ("ringbuf",)),), required=True),
    Feature("process events (exec, fork, exit)",
            (Way("tp_btf/sched_process_exec, sched_process_fork, sched_process_exit",
                 ("tp_btf",)),), required=True),
    Feature("failed execs", (Way("tracepoints", (TP,), tracepoints=("sys_exit_execve",)),)),
    Feature("file identity", (
        Way("fentry/security_file_open (the inode the open reached, taken in the open)",
            ("fentry_file", TP), tracepoints=("sys_exit_openat",)),
        Way("tracepoints", (TP,), tracepoints=("sys_exit_openat",),
            degraded="the inode is read through the new fd at the syscall's exit"),
    )),
    Feature("open deny (file.deny)", (
        Way("lsm/file_open (EPERM)", ("lsm",)),
        Way("fmod_ret/security_file_open (EPERM)", ("fmod_ret",)),
        Way("tracepoints sys_exit_open* + bpf_send_signal", (TP, "send_signal"),
            tracepoints=("sys_exit_openat",),
            degraded="the open succeeds and the process is killed before it returns to "
                     "user space (no EPERM); io_uring opens are not judged"),
    )),
    Feature("network connections", (Way("tracepoints", (TP,), tracepoints=("sys_enter_connect",)),)),
    Feature("DNS queries", (Way("tracepoints", (TP,), tracepoints=("sys_enter_sendto",)),)),
    Feature("kernel module load rule", (Way("tracepoints", (TP,), tracepoints=(
        "sys_enter_finit_module", "sys_enter_init_module")),)),
    Feature("container identity", (Way("tp_btf/cgroup_mkdir, cgroup_rmdir", ("tp_btf",)),),
            cgroup_v2=True),
    Feature("enforcement", (Way("cgroup/connect4, cgroup_skb/ingress",
                                ("cgroup_sock_addr", "cgroup_skb")),), cgroup_v2=True),
    Feature("connect deny by process (process: selectors)", (
        Way("task storage read in cgroup/connect4", ("cgroup_sock_addr", "sock_task_storage")),
    ), cgroup_v2=True),
    Feature("exec kill enforcement", (Way("bpf_send_signal at tp_btf/sched_process_exec",
                                          ("tp_btf", "send_signal")),)),
    Feature("packets", (Way("tp_btf/netif_receive_skb, net_dev_start_xmit", ("tp_btf",)),),
            extra=(("kprobe/netif_receive_skb", "kprobe",
                    "not needed: the tracepoint passes the same skb (length, device) at the "
                    "same point"),)),
    Feature("tcp connect latency", (Way("tp_btf/inet_sock_set_state", ("tp_btf",)),),
            extra=(("kprobe/tcp_v4_connect", "kprobe",
                    "not needed: SYN_SENT -> ESTABLISHED of inet_sock_set_state times the "
                    "handshake; the kprobe adds only the moment before the route lookup"),)),
    Feature("persistent enforcement (--persist)", (Way("cgroup/connect4", ("cgroup_sock_addr",)),),
            bpffs=True),
)


def _way_problem(w: Way, hooks: dict, facts: dict):
    """Why a way cannot serve here (None: it can), and its how text."""
    missing = [h for h in w.hooks if not hooks[h].available]
    if missing:
        return "; ".join(f"{h} {hooks[h].error or 'unavailable'}" for h in missing), w.how
    how = w.how
    if w.tracepoints:
        tfs = facts["tracefs"]["path"]
        found = [t for t in w.tracepoints if node.tracepoint_exists(tfs, "syscalls", t)]
        if not found:
            what = "module" if "module" in w.tracepoints[0] else "/".join(w.tracepoints)
            return (f"no {what} tracepoints" + ("" if facts["tracefs"]["mounted"]
                                                else " (tracefs not mounted)")), how
        if w.how == "tracepoints":
            how = f"tracepoints ({', '.join(found)})"
    return None, how


def judge(f: Feature, hooks: dict, facts: dict) -> dict:
    """{feature, available, why, hook, degraded, ways} for one feature: why is
    how the serving way works (or why none can), ways every way with why it
    is or is not used."""
    ways, used = [], None
    for w in f.ways:
        problem, how = _way_problem(w, hooks, facts)
        entry = {"hook": how, "used": False, "available": problem is None,
                 "why": problem or ""}
        if problem is None and used is None:
            used = (w, how)
            entry["used"] = True
            entry["why"] = w.degraded
        elif problem is None:
            entry["why"] = f"not needed: {used[1]} serves"
        ways.append(entry)
    for how, hook, why in f.extra:
        h = hooks.get(hook)
        here = "available here" if h is not None and h.available else \
            f"not available here: {h.error if h is not None else 'not probed'}"
        ways.append({"hook": how, "used": False, "available": bool(h and h.available),
                     "why": f"{why} ({here})"})
    out = {"feature": f.name, "available": used is not None, "hook": used[1] if used else "",
           "degraded": bool(used and used[0].degraded), "ways": ways}
    if used is None:
        out["why"] = " | ".join(w["why"] for w in ways[:len(f.ways)])
        return out
    how = [used[1]]
    if f.cgroup_v2:
        v2 = facts["cgroup"]["v2_mount"]
        if not v2:
            return {**out, "available": False, "why": "no cgroup v2 hierarchy mounted"}
        how.append(f"cgroup v2 at {v2}")
    if f.bpffs and not facts["bpffs"]["mounted"]:
        return {**out, "available": False, "why": "bpffs not mounted at /sys/fs/bpf"}
    out["why"] = ", ".join(how)
    return out


__all__ = ["FEATURES", "Feature", "Way", "judge"]
