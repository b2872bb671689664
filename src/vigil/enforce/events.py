"""Verdict events (kinds net_verdict, exec_verdict, file_verdict) as text and as alerts."""
from __future__ import annotations

import ipaddress

from vigil.alerts.alert import Alert
from vigil.enforce.model import PROTO_NAMES
from vigil.events.decode import stat_dev

VERDICTS = {1: "deny", 2: "audit", 3: "kill", 4: "hold"}
DIRECTIONS = {1: "egress", 2: "ingress", 3: "exec", 4: "file"}
MODES = {1: "read", 2: "write", 3: "read/write"}
POLICY_DEFAULT = 0xFFFF

RULE_DENIED = {"egress": "Network policy denied egress", "ingress": "Network policy denied ingress"}
RULE_AUDIT = {"egress": "Network policy would deny egress (audit)",
              "ingress": "Network policy would deny ingress (audit)"}
RULE_KILLED = "Process killed by policy"
RULE_KILL_AUDIT = "Process would be killed by policy (audit)"
# one rule name whichever hook refused the open: EPERM (lsm, fmod_ret) or a kill
# at the open's exit (tracepoint); vigil.verdict and vigil.hook say which
RULE_FILE_DENIED = "File open denied by policy"
RULE_FILE_AUDIT = "File open would be denied by policy (audit)"


def hook_name(ev) -> str:
    """The hook that decided a file verdict: lsm, fmod_ret or tracepoint."""
    from vigil.events.kinds import FILE_HOOKS
    h = getattr(ev, "hook", 0) or 0
    return (FILE_HOOKS[h] if h < len(FILE_HOOKS) else str(h)) or ""


def peer_address(ev) -> str:
    raw = ev.peer_addr or b""
    try:
        if ev.peer_family == 2:
            return str(ipaddress.IPv4Address(raw[:4]))
        return str(ipaddress.IPv6Address(raw[:16]))
    except ValueError:
        return "?"


def peer_text(ev) -> str:
    addr = peer_address(ev)
    if ev.peer_family != 2:
        addr = f"[{addr}]"
    return f"{addr}:{ev.peer_port}/{PROTO_NAMES.get(ev.peer_proto, ev.peer_proto)}"


def describe(ev) -> str:
    v = VERDICTS.get(ev.verdict, ev.verdict)
    if ev.type == "net_verdict":
        return f"{v} {DIRECTIONS.get(ev.direction, ev.direction)} {peer_text(ev)} policy={ev.policy}"
    if ev.type == "file_verdict":
        return (f"{v} open {ev.path} ({MODES.get(ev.modes, ev.modes)}) via {hook_name(ev)} "
                f"policy={ev.policy}")
    return f"{v} exec {ev.exe} policy={ev.policy}"


def folded_event(key, repeats: int, container, file_paths=None):
    """A net_verdict (file_verdict) event standing for the denials of one flow
    (file) the kernel only counted (``repeats`` more than the alert already
    sent); file_paths: (dev, ino) -> path of the denied files."""
    from vigil.events import Event, Kind
    import time
    if key.direction == 4:
        raw = bytes(key.addr)
        dev, ino = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:12], "little")
        verdict = VERDICTS.get(key.verdict)
        ev = Event(Kind.FILE_VERDICT, time=time.time_ns(), pid=0, comm="", cgroup_id=key.cgroup,
                   ident=key.ident, policy=key.policy, verdict=key.verdict, direction=4,
                   repeats=repeats - 1, dev=dev, ino=ino, modes=key.proto,
                   hook=3 if verdict == "kill" else 0,
                   path=(file_paths or {}).get((dev, ino), ""))
        ev.container = container
        return ev
    ev = Event(Kind.NET_VERDICT, time=time.time_ns(), pid=0, comm="", cgroup_id=key.cgroup,
               ident=key.ident, policy=key.policy, verdict=key.verdict,
               direction=key.direction, peer_family=2 if key.family == 4 else 10,
               peer_proto=key.proto, peer_port=key.port, peer_addr=bytes(key.addr),
               repeats=repeats - 1)
    ev.container = container
    return ev


def context_fields(ev) -> dict:
    """Who an enforcement alert is about: the process and its container/pod (None = unknown)."""
    fields = {"proc.name": ev.comm or None, "proc.pid": ev.pid or None,
              "container.id": getattr(ev.container, "short_id", None) if ev.container else None}
    c = ev.container
    if c is not None and c.is_container:
        fields["k8s.ns.name"] = c.namespace or None
        fields["k8s.pod.name"] = c.pod_name or None
    return fields


def alert_for(ev, policy_names: str, workload: str) -> Alert:
    """The alert for a deny/audit/kill verdict (folded per policy, workload, peer:
    the output names only those)."""
    verdict = VERDICTS.get(ev.verdict, "")
    fields = {"vigil.policy": policy_names, "vigil.workload": workload, "vigil.verdict": verdict,
              **context_fields(ev)}
    if ev.type == "net_verdict":
        direction = DIRECTIONS.get(ev.direction, "egress")
        rule = (RULE_DENIED if verdict == "deny" else RULE_AUDIT)[direction]
        peer = peer_text(ev)
        fields.update({"vigil.direction": direction, "vigil.peer": peer,
                       "fd.rip": peer_address(ev), "fd.rport": ev.peer_port,
                       "fd.l4proto": PROTO_NAMES.get(ev.peer_proto, str(ev.peer_proto)).lower()})
        what = "connection to" if direction == "egress" else "connection from"
        output = (f"{rule}: {what} {peer} (policy={policy_names} workload={workload})")
        priority = "warning" if verdict == "deny" else "notice"
        tags = ["network", "enforcement", "vigil"]
    elif ev.type == "file_verdict":
        rule = RULE_FILE_AUDIT if verdict == "audit" else RULE_FILE_DENIED
        fields.update({"fd.name": ev.path or None, "vigil.file": ev.path or None,
                       "vigil.hook": hook_name(ev) or None, "vigil.access": MODES.get(ev.modes),
                       "fd.dev": stat_dev(ev.dev), "fd.ino": ev.ino})
        how = {"deny": "open refused (EPERM)", "kill": "process killed at the open"}
        output = (f"{rule}: {ev.path or f'inode {ev.dev}:{ev.ino}'} "
                  f"({how.get(verdict, 'allowed, audit')}; policy={policy_names} "
                  f"workload={workload})")
        priority = "notice" if verdict == "audit" else "critical"
        tags = ["filesystem", "enforcement", "vigil"]
    else:
        rule = RULE_KILLED if verdict == "kill" else RULE_KILL_AUDIT
        fields.update({"proc.exepath": ev.exe, "vigil.binary": ev.exe})
        output = f"{rule}: {ev.exe} (policy={policy_names} workload={workload})"
        priority = "critical" if verdict == "kill" else "notice"
        tags = ["process", "enforcement", "vigil"]
    return Alert(time=ev.time, rule=rule, priority=priority, output=output,
                 output_fields={k: v for k, v in fields.items() if v is not None}, tags=tags,
                 event=ev, count=1 + (ev.repeats or 0))


__all__ = ["describe", "alert_for", "context_fields", "peer_text", "VERDICTS", "RULE_DENIED",
           "RULE_KILLED", "RULE_FILE_DENIED", "RULE_FILE_AUDIT"]
