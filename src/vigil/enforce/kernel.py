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
from vigil.kernel.environment import EnvironmentProblem
from vigil.kernel.sensors import SHARED_MAPS, bpf_dir
from vigil.state.containers.cgroupfs import find_v2_mount

log = logging.getLogger("vigil.enforce.kernel")

OBJECTS = ("enforce_net", "enforce_exec")
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

    def _open(self, name: str, autoload: bool) -> libbpf.BpfObject:
        obj = libbpf.BpfObject(str(self.directory / f"{name}.bpf.o"))
        try:
            for m in SHARED_MAPS:
                obj.reuse_map(m, self.shared[m].fd)
            for m, mp in self.maps.items():
                obj.reuse_map(m, mp.fd)
            for p in obj.programs():
                p.autoload = autoload
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
            for name in OBJECTS:
                obj = self._open(name, True)
                objects.append(obj)
                obj.load()
                for prog in obj.programs():
                    try:
                        if prog.section.startswith(("cgroup/", "cgroup_skb/")):
                            links.append(prog.attach_cgroup(cg))
                        else:
                            links.append(prog.attach())
                    except libbpf.BpfError as e:
                        self.errors.append(f"{prog.name}: {e.strerror}")
                        log.error("enforcement program %s (%s) not attached: %s", prog.name,
                                  prog.section, e.strerror)
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
