"""`vigil doctor`: what this node supports and why.

Hooks are probed by loading a tiny program per hook type (vigil.kernel.probe);
node facts come from vigil.kernel.node, runtimes from
vigil.state.containers.runtimes.  The report says which vigil features work
here, each with the reason, and exits 1 when the agent cannot run."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import click

from vigil.kernel import environment, node
from vigil.kernel.probe import probe_all, probes_path


@dataclass(frozen=True)
class Feature:
    name: str
    hooks: tuple            # hook types it needs (all of them)
    tracepoints: tuple = ()  # syscall tracepoints it needs (any one of them is enough)
    cgroup_v2: bool = False
    bpffs: bool = False
    required: bool = False  # the agent cannot run without it
    how: str = ""           # how vigil does it, when more telling than the hook names


FEATURES = (
    Feature("event transport", ("ringbuf",), required=True),
    Feature("process events (exec, fork, exit)", ("tp_btf",), required=True,
            how="tp_btf/sched_process_exec, sched_process_fork, sched_process_exit"),
    Feature("failed execs", ("tracepoint",), ("sys_exit_execve",)),
    Feature("file identity", ("tracepoint",), ("sys_exit_openat",)),
    Feature("network connections", ("tracepoint",), ("sys_enter_connect",)),
    Feature("DNS queries", ("tracepoint",), ("sys_enter_sendto",)),
    Feature("kernel module load rule", ("tracepoint",),
            ("sys_enter_finit_module", "sys_enter_init_module")),
    Feature("container identity", ("tp_btf",), cgroup_v2=True,
            how="tp_btf/cgroup_mkdir, cgroup_rmdir"),
    Feature("enforcement", ("cgroup_sock_addr", "cgroup_skb"), cgroup_v2=True),
    Feature("exec kill enforcement", ("tp_btf", "send_signal"),
            how="bpf_send_signal at tp_btf/sched_process_exec"),
    Feature("persistent enforcement (--persist)", ("cgroup_sock_addr",), bpffs=True),
)
HOOK_HOW = {"tp_btf": "tp_btf", "cgroup_sock_addr": "cgroup/connect4",
            "cgroup_skb": "cgroup_skb/ingress", "ringbuf": "BPF ring buffer",
            "send_signal": "bpf_send_signal", "tracepoint": "tracepoints"}
AGENT_CAPS = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN")


def judge(f: Feature, hooks: dict, facts: dict) -> dict:
    """{feature, available, why} for one feature."""
    missing = [h for h in f.hooks if not hooks[h].available]
    if missing:
        why = "; ".join(f"{h} {hooks[h].error or 'unavailable'}" for h in missing)
        return {"feature": f.name, "available": False, "why": why}
    how = [f.how] if f.how else [HOOK_HOW.get(h, h) for h in f.hooks]
    if f.tracepoints:
        tfs = facts["tracefs"]["path"]
        found = [t for t in f.tracepoints if node.tracepoint_exists(tfs, "syscalls", t)]
        if not found:
            what = "module" if "module" in f.name else "/".join(f.tracepoints)
            return {"feature": f.name, "available": False,
                    "why": f"no {what} tracepoints" + ("" if facts["tracefs"]["mounted"]
                                                       else " (tracefs not mounted)")}
        how = [f"tracepoints ({', '.join(found)})"] + how[1:]
    if f.cgroup_v2:
        v2 = facts["cgroup"]["v2_mount"]
        if not v2:
            return {"feature": f.name, "available": False, "why": "no cgroup v2 hierarchy mounted"}
        how.append(f"cgroup v2 at {v2}")
    if f.bpffs and not facts["bpffs"]["mounted"]:
        return {"feature": f.name, "available": False, "why": "bpffs not mounted at /sys/fs/bpf"}
    return {"feature": f.name, "available": True, "why": ", ".join(how)}


def build_report() -> dict:
    from vigil.kernel import libbpf
    from vigil.state.containers.runtimes import runtimes_found
    problems = []
    facts = node.facts()
    try:
        facts["libbpf"] = libbpf.version()
    except libbpf.LibbpfMissing as e:
        facts["libbpf"] = ""
        problems.append(str(e))
    if not facts["tracefs"]["mounted"] and facts["capabilities"]["CAP_SYS_ADMIN"]:
        try:        # as the agent would: syscall tracepoints need it
            environment.ensure_tracefs()
            facts["tracefs"]["mounted"] = True
            facts["tracefs"]["mounted_by_doctor"] = True
        except environment.EnvironmentProblem as e:
            problems.append(str(e))
    if not facts["btf"]["present"]:
        problems.append(f"no kernel BTF at {facts['btf']['path']} (CONFIG_DEBUG_INFO_BTF=y needed)")
    caps = facts["capabilities"]
    if not caps["CAP_SYS_ADMIN"] and not (caps["CAP_BPF"] and caps["CAP_PERFMON"]):
        lacking = [c for c in AGENT_CAPS if not caps[c]]
        problems.append(f"missing capabilities: {', '.join(lacking)} (loading BPF needs "
                        "CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)")
    hooks = {}
    if facts["libbpf"] and os.path.exists(probes_path()):
        hooks = {r.hook: r for r in probe_all(facts["tracefs"]["path"], facts["cgroup"]["v2_mount"])}
    elif facts["libbpf"]:
        problems.append(f"the probe object {probes_path()} is not built (make bpf)")
    features = []
    if hooks:
        features = [judge(f, hooks, facts) for f in FEATURES]
        for f, j in zip(FEATURES, features):
            if f.required and not j["available"]:
                problems.append(f"{f.name} unavailable: {j['why']}")
    return {"node": facts, "hooks": [h.as_dict() for h in hooks.values()],
            "runtimes": runtimes_found(), "features": features,
            "can_run": not problems, "problems": problems}


def _yes(ok) -> str:
    return click.style("yes", fg="green") if ok else click.style(" no", fg="red")


def render(rep: dict) -> str:
    n = rep["node"]
    btf = n["btf"]
    caps = ", ".join(f"{c[4:]} {'yes' if v else 'no'}" for c, v in n["capabilities"].items())
    runtimes = "; ".join(
        r["runtime"] + " (" + ", ".join(
            [f"socket {s}" for s in r["sockets"]] + [f"state {d}" for d in r["state"]]
            + ([f"cli {r['cli']}"] if r["cli"] else [])) + ")"
        for r in rep["runtimes"]) or "none found"
    tfs = n["tracefs"]
    lines = [
        "vigil doctor: " + ("this node can run the agent" if rep["can_run"]
                            else "the agent CANNOT run here"),
        "",
        f"kernel      {n['kernel']}; BTF "
        + (f"{btf['path']} ({btf['bytes'] / 1e6:.1f} MB)" if btf["present"] else "MISSING")
        + (f"; lockdown {n['lockdown']}" if n["lockdown"] else ""),
        f"libbpf      {n.get('libbpf') or 'MISSING'}",
        f"privileges  {'root' if n['root'] else 'not root'}; {caps}",
        f"cgroup      {n['cgroup']['mode']}"
        + (f" (v2 at {n['cgroup']['v2_mount']})" if n["cgroup"]["v2_mount"] else ""),
        f"tracefs     {tfs['path']} ({'mounted' if tfs['mounted'] else 'not mounted'}"
        + (", by doctor as the agent would" if tfs.get("mounted_by_doctor") else "") + ")",
        f"bpffs       {n['bpffs']['path']} ({'mounted' if n['bpffs']['mounted'] else 'not mounted'})",
        f"runtimes    {runtimes}",
    ]
    if rep["hooks"]:
        lines += ["", "hooks (each probed by loading a program):"]
        for h in rep["hooks"]:
            tail = f": {h['error']}" if h["error"] else ""
            lines.append(f"  {_yes(h['available'])}  {h['hook']:<17} {h['what']}{tail}")
    if rep["features"]:
        lines += ["", "features:"]
        lines += [f"  {_yes(f['available'])}  {f['feature']}: {f['why']}" for f in rep["features"]]
    if rep["problems"]:
        lines += ["", "cannot run the agent:"] + [f"  - {p}" for p in rep["problems"]]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def doctor(as_json: bool) -> None:
    """What this node supports and why: kernel, BTF, each hook type (probed by
    loading a program), cgroup mode, tracefs/bpffs, runtimes, capabilities, and
    which vigil features work here.  Exit 1 when the agent cannot run."""
    rep = build_report()
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        click.echo(render(rep), color=sys.stdout.isatty() or None)
    sys.exit(0 if rep["can_run"] else 1)
