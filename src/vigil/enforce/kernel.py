"""The enforcement programs in the kernel: load (on the sensors' shared maps,
so verdicts reach the agent's ring buffer), attach once at the cgroup v2 root
(cgroup socket hooks, as BPF links: multi-attach) and at sched_process_exec,
and detach on exit (fail-open) - unless persisted: then links and maps are
pinned under /sys/fs/bpf/vigil and stay until ``vigil policy remove --all``.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import struct
import subprocess

from vigil.enforce.tables import MAPS
from vigil.kernel import libbpf
from vigil.kernel.environment import EnvironmentProblem, tracefs_path
from vigil.kernel.sensors import SHARED_MAPS, bpf_dir
from vigil.state.containers.cgroupfs import find_v2_mount

log = logging.getLogger("vigil.enforce.kernel")

OBJECTS = ("enforce_net", "enforce_exec", "enforce_file")
# enforce_file.bpf.c: the hooks that can refuse an open, best first; the first
# whose programs this kernel loads and attaches is the one used (the others
# are not loaded).  The tracepoint programs are the reference, on every kernel.
FILE_HOOKS = (
    ("lsm", ("file_verdict__lsm",), "lsm/file_open: opens denied with EPERM"),
    ("fmod_ret", ("file_verdict__fmod_ret",), "fmod_ret/security_file_open: opens denied with EPERM"),
    ("tracepoint", ("file_verdict__exit_open", "file_verdict__exit_openat",
                    "file_verdict__exit_openat2", "file_verdict__exit_creat",
                    "file_verdict__exit_open_by_handle_at"),
     "tp/syscalls/sys_exit_open*: a denied open kills the process (SIGKILL before it "
     "returns to user space; no EPERM on this kernel)"),
)
PIN_ROOT = os.environ.get("VIGIL_PIN_DIR", "/sys/fs/bpf/vigil")


class EnforceError(EnvironmentProblem):
    """The enforcement programs cannot run here (one line for the CLI)."""


def _ensure_bpffs(root: str) -> None:
    base = os.path.dirname(root.rstrip("/"))
    if not os.path.ismount(base):
        subprocess.run(["mount", "-t", "bpf", "bpf", base], capture_output=True)
    os.makedirs(root, exist_ok=True)


class EnforceKernel:
    def __init__(self, shared: dict, directory=None, cgroup_root: str | None = None):
        self.shared = shared                  # the sensors' shared maps (name -> Map)
        self.directory = directory or bpf_dir()
        self.cgroup_root = cgroup_root or find_v2_mount()
        self._owner = None                    # object owning the enforcement maps
        self.maps: dict = {}
        self.objects: list = []
        self.links: list = []
        self.errors: list = []                # "program: why" of what could not be attached
        self.persisted = False
        self.file_hook = ""                   # lsm | fmod_ret | tracepoint | "" (none)
        self.net_procs = None                 # process selectors in the socket hooks (None: not tried)
        self.net_procs_why = ""
        self.file_hook_why: dict = {}         # hook -> why it is not used here

    def _open(self, name: str, autoload) -> libbpf.BpfObject:
        obj = libbpf.BpfObject(str(self.directory / f"{name}.bpf.o"))
        try:
            for m in SHARED_MAPS:
                obj.reuse_map(m, self.shared[m].fd)
            for m, mp in self.maps.items():
                obj.reuse_map(m, mp.fd)
            for p in obj.programs():
                p.autoload = autoload if isinstance(autoload, bool) else p.name in autoload
        except BaseException:
            obj.close()
            raise
        return obj

    def start(self) -> "EnforceKernel":
        if not self.cgroup_root:
            raise EnforceError("no cgroup v2 hierarchy is mounted: the socket hooks need one")
        try:
            owner = self._open(OBJECTS[0], False)
            owner.load()
            self._owner = owner
            self.maps = {m: owner.map(m) for m in MAPS}
            self._load_and_attach()
        except libbpf.BpfError as e:
            self.stop()
            raise EnforceError(f"enforcement programs: {e}"
                               f"{': ' + e.details if e.details else ''}") from None
        return self

    def _load_and_attach(self) -> None:
        objects, links = [], []
        cg = os.open(self.cgroup_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in OBJECTS[:2]:
                obj = self._load_object(name)
                objects.append(obj)
                for prog in obj.programs():
                    try:
                        links.append(self._attach_prog(prog, cg))
                    except libbpf.BpfError as e:
                        self.errors.append(f"{prog.name}: {e.strerror}")
                        log.error("enforcement program %s (%s) not attached: %s", prog.name,
                                  prog.section, e.strerror)
            self._load_file_hook(objects, links, cg)
        except BaseException:
            for link in links:
                link.destroy()
            for obj in objects:
                obj.close()
            raise
        finally:
            os.close(cg)
        old_links, old_objects = self.links, self.objects
        self.links, self.objects = links, objects
        # the new programs are attached: the old ones (if any) go
        for link in old_links:
            link.destroy()
        for obj in old_objects:
            obj.close()

    def _load_object(self, name: str) -> libbpf.BpfObject:
        """Load one enforcement object whole.  enforce_net: with process
        selectors (task storage in the socket hooks) where the kernel takes
        them, else again without (net_procs False, net_procs_why says why)."""
        obj = self._open(name, True)
        if name != "enforce_net" or self.net_procs is False:
            if name == "enforce_net":
                obj.set_const("enf_task_storage", struct.pack("<I", 0))
            try:
                obj.load()
            except BaseException:
                obj.close()
                raise
            return obj
        try:
            obj.load()
            self.net_procs = True
            return obj
        except libbpf.BpfError as e:
            obj.close()
            first = e
        obj = self._open(name, True)
        obj.set_const("enf_task_storage", struct.pack("<I", 0))
        try:
            obj.load()
        except BaseException:
            obj.close()
            raise first from None
        self.net_procs = False
        self.net_procs_why = ("the socket hooks load only without task storage "
                              f"(bpf_task_storage_get; {_refusal(first, 'load')})")
        log.warning("network enforcement without process selectors: %s; an entry with "
                    "process: matches no process here", self.net_procs_why)
        return obj

    def _attach_prog(self, prog, cg: int) -> libbpf.Link:
        sec = prog.section
        if sec.startswith(("cgroup/", "cgroup_skb/")):
            return prog.attach_cgroup(cg)
        parts = sec.split("/")
        if parts[0] in ("tp", "tracepoint") and len(parts) == 3:
            return prog.attach_tracepoint(tracefs_path(), parts[1], parts[2])
        return prog.attach()

    def _load_file_hook(self, objects: list, links: list, cg: int) -> None:
        """The best file-open hook this kernel takes (FILE_HOOKS), loaded and
        attached; the ones before it are noted with why not.  Once chosen
        (a swap_ring reloads), the same hook is taken again."""
        path = self.directory / f"{OBJECTS[2]}.bpf.o"
        if not path.exists():
            self.file_hook_why = {"all": f"{path.name} not built"}
            log.warning("file open enforcement unavailable: %s not built", path.name)
            return
        choices = [h for h in FILE_HOOKS if not self.file_hook or h[0] == self.file_hook]
        from vigil.kernel.probe import lsm_reason
        for hook, progs, what in choices:
            if hook == "lsm" and lsm_reason():
                # an LSM program loads and attaches there, but is never called
                self.file_hook_why[hook] = lsm_reason()
                continue
            obj = self._open(OBJECTS[2], progs)
            got = []
            try:
                obj.load()
                for prog in obj.programs():
                    if prog.name in progs:
                        got.append(self._attach_prog(prog, cg))
            except libbpf.BpfError as e:
                for link in got:
                    link.destroy()
                obj.close()
                self.file_hook_why[hook] = _refusal(e, "attach" if obj.loaded else "load")
                continue
            objects.append(obj)
            links.extend(got)
            if not self.file_hook:
                self.file_hook = hook
                others = "; ".join(f"{h}: {w}" for h, w in self.file_hook_why.items())
                (log.info if hook != "tracepoint" else log.warning)(
                    "file open enforcement: %s%s", what, f" ({others})" if others else "")
            return
        log.error("file open enforcement unavailable: %s",
                  "; ".join(f"{h}: {w}" for h, w in self.file_hook_why.items()))

    def swap_ring(self, shared: dict) -> None:
        """The sensors were restarted with new shared maps (a new ring buffer):
        load the programs again on them, attach, then detach the old ones."""
        self.shared = shared
        self._load_and_attach()

    def attached(self) -> list:
        return [link.name for link in self.links if link.ptr]

    # --- persistence ---

    def persist(self, root: str = PIN_ROOT) -> str:
        """Pin links and maps: enforcement outlives this process."""
        _ensure_bpffs(root)
        clear_pins(root, resume=False)
        os.makedirs(root, exist_ok=True)
        for link in self.links:
            link.pin(os.path.join(root, f"link_{link.name}"))
        for name, m in self.maps.items():
            libbpf.pin_fd(m.fd, os.path.join(root, f"map_{name}"))
        self.persisted = True
        return root

    def stop(self) -> None:
        """Detach (a persisted link stays attached through its pin)."""
        for link in self.links:
            link.destroy()
        self.links = []
        for obj in self.objects:
            obj.close()
        self.objects = []
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        self.maps = {}


def _refusal(e: libbpf.BpfError, stage: str) -> str:
    """One line: what the kernel said when it refused a hook."""
    from vigil.kernel.probe import explain_refusal
    return explain_refusal(e, stage)


def held_pids(root: str = PIN_ROOT) -> list:
    """Processes a crashed agent left stopped at their first exec (from the pinned map)."""
    path = os.path.join(root, "map_enf_held")
    if not os.path.exists(path):
        return []
    fd = libbpf.pinned_fd(path)
    try:
        m = libbpf.Map("enf_held", fd, 4, 8, 9, 4096)
        return [struct.unpack("<I", k)[0] for k in m.keys()]
    finally:
        os.close(fd)


def clear_pins(root: str = PIN_ROOT, resume: bool = True) -> int:
    """Remove pinned enforcement (links detach as their pin goes); with resume,
    continue the processes it held stopped.  Returns the pins removed."""
    if not os.path.isdir(root):
        return 0
    if resume:
        for pid in held_pids(root):
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise
    n = len(os.listdir(root))
    shutil.rmtree(root)
    return n


__all__ = ["EnforceKernel", "EnforceError", "clear_pins", "held_pids", "PIN_ROOT", "OBJECTS"]
