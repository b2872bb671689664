"""The enforcer: policies -> compiled sets -> the kernel tables, kept in step
with the containers vigil learns, and verdicts -> alerts.

* ``start(sensors)`` loads and attaches the programs on the sensors' maps and
  writes every known workload's sets before returning.
* The container resolver's changes mark the tables dirty; the event loop's
  tick recompiles and switches them atomically (tables.Tables.replace_all).
* A held first exec (exec_verdict ENF_HOLD) reaches ``on_event`` once its
  container's identity is known or ``containers.hold`` has passed (the
  pipeline's EventHold); its cgroup is then assigned and the process is
  resumed, or killed when an exec deny of its policies matches.
* ``reload()`` (SIGHUP, with the rules) keeps the last good policies on error.
* ``stop()`` detaches (fail-open) and resumes what is held, unless persisted.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Callable, Optional

from vigil.enforce.compiler import (Compiler, PolicyIndex, uses_peers, EXEC_ALLOW, EXEC_NAME,
                                    EXEC_PATH, F_EXEC_ALLOW)
from vigil.enforce.events import VERDICTS, alert_for
from vigil.enforce.loader import load_policies
from vigil.enforce.model import HOST_WORKLOAD
from vigil.enforce.tables import POLICY_DEFAULT, Tables
from vigil.enforce.workloads import WorkloadSource
from vigil.events import Kind

log = logging.getLogger("vigil.enforce")

DEFAULT_PROTECTED = ("kubelet", "containerd", "runc", "crio", "conmon", "sshd")
HEARTBEAT = 2.0          # s: new containers are held only while the agent is alive
FILE_RESCAN = 2.0        # s: denied paths are stat'ed again this often
STATUS_DIR = os.environ.get("VIGIL_RUN_DIR", "/run/vigil")
STATUS_FILE = "enforce.json"


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Enforcer:
    def __init__(self, paths: list, *, resolver=None, kube=None,
                 emit: Optional[Callable] = None, hold: float = 0.25, persist: bool = False,
                 protected=DEFAULT_PROTECTED, status_dir: str = STATUS_DIR):
        self.paths = list(paths)
        self.resolver = resolver
        self.kube = kube
        self.emit = emit or (lambda alert: None)
        self.hold = hold
        self.persist = persist
        self.protected = tuple(protected)
        self.status_path = os.path.join(status_dir, STATUS_FILE)
        self.policies = load_policies(self.paths)     # PolicyError before anything loads
        self.index = PolicyIndex()
        self.kernel = None
        self.tables: Optional[Tables] = None
        self.source = None
        self._dirty = False
        self._host_like: set = set()    # cgroups of child pid namespaces that are no container
        self._compiled: dict = {}       # workload key -> (enforce, audit) sets
        self._labels: dict = {}         # workload key -> label
        self.held = 0
        self.kills = 0
        self.released = 0
        self.alerts = 0
        self.applies = 0
        self._last_flush = 0.0
        self._last_files = 0.0

    # --- lifecycle ---

    def start(self, sensors) -> "Enforcer":
        from vigil.enforce.kernel import EnforceKernel
        self.kernel = EnforceKernel(sensors.maps).start()
        try:
            self.tables = Tables(self.kernel.maps)
            self.source = WorkloadSource(self.kernel.cgroup_root, self.kube)
            self.tables.set_protected(self.protected)
            self.tables.set_vigil(os.getpid())
            self.apply()
            self._heartbeat()
            if self.persist:
                # pinned now: enforcement survives even a kill -9 of the agent
                self.kernel.persist()
            if self.resolver is not None:
                self.resolver.add_listener(self._on_container)
        except BaseException:
            self.kernel.stop()
            raise
        log.info("enforcing %d policies (%s)", len(self.policies),
                 ", ".join(self.kernel.attached()))
        return self

    def swap_sensors(self, sensors) -> None:
        if self.kernel is not None:
            self.kernel.swap_ring(sensors.maps)
            if self.persist:
                self.kernel.persist()      # the new links replace the pinned ones

    def stop(self) -> None:
        if self.kernel is None:
            return
        if self.persist:
            from vigil.enforce.kernel import PIN_ROOT
            self.tables.set_hold_until(0)
            self._resume_all_held()
            log.warning("enforcement stays pinned in %s (vigil policy remove --all clears it)",
                        PIN_ROOT)
        else:
            self.tables.set_hold_until(0)
            self._resume_all_held()
        self.kernel.stop()
        self.kernel = None
        try:
            os.unlink(self.status_path)
        except OSError:
            pass

    def _resume_all_held(self) -> None:
        m = self.tables.maps["enf_held"]
        for k in list(m.keys()):
            pid = int.from_bytes(k, "little")
            _signal(pid, signal.SIGCONT)
            m.delete(k)

    # --- compiling and applying ---

    def needs_hold(self) -> bool:
        """Hold new containers' first exec: only with a resolver to learn who
        they are, a hold time, and a policy that could select a container."""
        return (self.resolver is not None and self.hold > 0
                and any(p.selects_containers for p in self.policies))

    def _workloads(self) -> list:
        by_id: dict = {}
        if self.resolver is not None:
            for cgid, info in self.resolver.known().items():
                if info.is_container and info.complete:
                    by_id.setdefault(info.id, (info, []))[1].append(cgid)
        return [HOST_WORKLOAD] + [self.source.workload(info, cgids)
                                  for info, cgids in by_id.values()]

    def apply(self) -> None:
        """Compile every known workload and switch the kernel tables at once."""
        self._dirty = False
        workloads = self._workloads()
        compiled = Compiler(self.policies, workloads, self.index).compile()
        self.tables.set_procs(self.index.procs)     # before any set naming a class
        assignments = {}
        for wl in workloads:
            for cg in wl.cgroup_ids:
                assignments[cg] = compiled[wl.key]
        host = compiled[HOST_WORKLOAD.key]
        for cg in self._host_like:
            assignments.setdefault(cg, host)
        self.tables.replace_all(assignments, host)
        self._compiled = compiled
        self._labels = {wl.key: wl.label for wl in workloads}
        self._cg_workload = {cg: wl.key for wl in workloads for cg in wl.cgroup_ids}
        self.applies += 1
        self.write_status(workloads)

    def _assign_one(self, info, cgid: int):
        """A container (or a host-like cgroup) learnt now: its sets, both halves."""
        if info is not None and info.is_container:
            wl = self.source.workload(info, (cgid,))
            comp = Compiler(self.policies, [wl], self.index).compile()[wl.key]
            self.tables.set_procs(self.index.procs)
            self._compiled[wl.key] = comp
            self._labels[wl.key] = wl.label
            self._cg_workload[cgid] = wl.key
        else:
            self._host_like.add(cgid)
            comp = self._compiled.get(HOST_WORKLOAD.key, (None, None))
            self._cg_workload[cgid] = HOST_WORKLOAD.key
        self.tables.assign(cgid, comp)
        if uses_peers(self.policies):
            self._dirty = True     # others' peer sets may name this pod
        return comp

    def _on_container(self, cgid, info) -> None:
        # the resolver's threads: only mark; the event loop applies
        if info is None or info.is_container:
            self._dirty = True

    def reload(self) -> bool:
        from vigil.enforce.documents import PolicyError
        try:
            policies = load_policies(self.paths)
        except PolicyError as e:
            self.reload_error = str(e)
            log.error("policy reload failed, keeping the last good policies: %s", e)
            return False
        self.policies = policies
        if self.tables is not None:
            self.apply()
        return True

    def tick(self, now: float = 0.0) -> None:
        if self.tables is None:
            return
        self._heartbeat()
        if self._dirty:
            self.apply()
        if now - self._last_files >= FILE_RESCAN:
            # a denied file replaced by rename (passwd rewrites /etc/shadow) is a new inode
            self._last_files = now
            if self.tables.refresh_files():
                log.info("file deny: a denied path names another file now; entries updated")
        if now - self._last_flush >= 1.0:
            self._last_flush = now
            self._flush_folded()

    def _flush_folded(self) -> None:
        """Denials the kernel only counted (a retry loop) become one alert with their count."""
        from vigil.enforce.events import folded_event
        for key, repeats in self.tables.take_folded(boot_ns() - 1_000_000_000):
            info = self.resolver.peek(key.cgroup) if self.resolver is not None else None
            ev = folded_event(key, repeats, info, self.tables.file_paths())
            if ev.kind == Kind.FILE_VERDICT and not ev.hook:
                ev.hook = self.file_hook_index()
            self._alert(ev)

    def file_hook_index(self) -> int:
        from vigil.events.kinds import FILE_HOOKS
        hook = self.kernel.file_hook if self.kernel else ""
        return FILE_HOOKS.index(hook) if hook in FILE_HOOKS else 0

    def _heartbeat(self) -> None:
        until = boot_ns() + int(HEARTBEAT * 1e9) if self.needs_hold() else 0
        self.tables.set_hold_until(until)

    # --- verdicts ---

    def on_event(self, ev) -> None:
        if ev.kind not in (Kind.NET_VERDICT, Kind.EXEC_VERDICT, Kind.FILE_VERDICT):
            return
        if VERDICTS.get(ev.verdict) == "hold":
            self._release(ev)
            return
        self._alert(ev)

    def _policy_names(self, ev) -> str:
        if ev.policy != 0xFFFF:
            return self.index.name(ev.policy)
        pset = self.tables.sets.get(ev.ident) if self.tables else None
        direction = {1: "egress", 2: "ingress", 3: "exec", 4: "file"}.get(ev.direction, "")
        names = pset.default_policies(direction) if pset is not None else ()
        return ",".join(names) or "default deny"

    def _workload_label(self, ev) -> str:
        c = ev.container
        if c is not None and c.is_container:
            return self._labels.get(c.id) or (f"{c.namespace}/{c.pod_name or c.name or c.short_id}"
                                              if c.namespace else c.name or c.short_id)
        return "host"

    def _alert(self, ev) -> None:
        self.alerts += 1
        if VERDICTS.get(ev.verdict) == "kill":
            self.kills += 1
        self.emit(alert_for(ev, self._policy_names(ev), self._workload_label(ev)))

    def _release(self, ev) -> None:
        """A first exec held for its container's identity: assign, then resume or kill."""
        self.held += 1
        info = ev.container
        comp = self._assign_one(info, ev.cgroup_id)
        pid = ev.pid
        verdict = None
        for mode, pset in (("kill", comp[0]), ("audit", comp[1])):
            pol = exec_match(pset, ev.comm or "", ev.exe or "")
            if pol is not None:
                verdict, policy, ident = mode, pol, self.tables.ids.get(pset, 0)
                break
        if verdict == "kill" and (ev.comm or "") not in self.protected:
            _signal(pid, signal.SIGKILL)
        _signal(pid, signal.SIGCONT)
        self.tables.release_held(pid)
        self.released += 1
        if verdict is not None:
            ev.verdict = 3 if verdict == "kill" else 2
            ev.policy = policy
            ev.ident = ident
            self._alert(ev)

    # --- status (vigil policy show) ---

    def write_status(self, workloads=None) -> None:
        rows = []
        for wl in workloads or []:
            e, a = self._compiled.get(wl.key, (None, None))
            if e is None and a is None and not wl.is_host:
                continue
            rows.append({"workload": wl.label, "id": wl.key, "cgroups": list(wl.cgroup_ids),
                         "enforce": list(e.policies) if e else [],
                         "audit": [p for p in (a.policies if a else ()) if not e or p not in e.policies],
                         "entries": (e.entries if e else 0) + (a.entries if a else 0)})
        st = {"pid": os.getpid(), "time": time.time(), "persist": self.persist,
              "programs": self.kernel.attached() if self.kernel else [],
              "errors": self.kernel.errors if self.kernel else [],
              "file_hook": self.kernel.file_hook if self.kernel else "",
              "file_hook_why": self.kernel.file_hook_why if self.kernel else {},
              "policies": [{"policy": p.key, "mode": p.mode, "source": p.source}
                           for p in self.policies],
              "workloads": rows, "kernel_entries": self.tables.entries() if self.tables else 0}
        try:
            os.makedirs(os.path.dirname(self.status_path), exist_ok=True)
            tmp = self.status_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(st, f, indent=1)
            os.replace(tmp, self.status_path)
        except OSError as e:
            log.debug("cannot write %s: %s", self.status_path, e)

    def stats(self) -> dict:
        return {"policies": len(self.policies), "held": self.held, "released": self.released,
                "kills": self.kills, "alerts": self.alerts, "applies": self.applies,
                "entries": self.tables.entries() if self.tables else 0}


def exec_match(pset, comm: str, exe: str):
    """The policy index of the exec deny of pset matching a process, or None."""
    if pset is None:
        return None
    execs = dict(pset.execs)
    pol = execs.get((EXEC_NAME, comm[:15]))
    if pol is None:
        pol = execs.get((EXEC_PATH, exe))
    if pol is None and pset.flags & F_EXEC_ALLOW and (EXEC_ALLOW, exe) not in execs:
        pol = POLICY_DEFAULT      # not on the allow-list: the default deny of "exec"
    return pol


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["Enforcer", "DEFAULT_PROTECTED", "exec_match"]
