"""`vigil doctor`: what this node supports and why.

Hooks are probed by loading a tiny program per hook type (vigil.kernel.probe);
node facts come from vigil.kernel.node, runtimes from
vigil.state.containers.runtimes.  The report says which vigil features work
here, which hook serves each and why the others do not
(vigil.kernel.probe_features), and exits 1 when the agent cannot run."""
from __future__ import annotations

import json
import os
import sys

import click

from vigil.kernel import environment, node
from vigil.kernel.probe import probe_all, probes_path
from vigil.kernel.probe_features import FEATURES, judge


AGENT_CAPS = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN")


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
        for f in rep["features"]:
            lines.append(f"  {_yes(f['available'])}  {f['feature']}: {f['why']}"
                         + (" [degraded]" if f.get("degraded") else ""))
            others = [w for w in f.get("ways", ()) if not w["used"] or w["why"]]
            if len(f.get("ways", ())) > 1 or f.get("degraded"):
                for w in others:
                    mark = "used" if w["used"] else "not used"
                    lines.append(f"         {mark}: {w['hook']}: {w['why']}")
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
