"""Loading the sensors: one BPF object per sensor, probed per program.

Program names say which event kind they serve (``open__enter_openat`` serves
``open``), so the manager autoloads and attaches only what the wanted kinds
need.  The sensors are the objects in the directory (the kinds registry names
the ones vigil's kinds come from, to warn when one is missing).  A program
the kernel refuses is disabled alone, with one log line that says which and
why; the rest keeps working.  Maps shared by all sensors (the two ring
buffers, config, filters, counters, the per-process budgets) are created
once and reused by fd.  Stopping detaches at once (vigil.kernel.detach).
"""
from __future__ import annotations


import errno
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from vigil.kernel import counters, environment
from vigil.kernel import libbpf
from vigil.kernel.detach import detach_all, release_later
from vigil.events import KIND_BY_NAME, Kind
from vigil.events.kinds import ENFORCE_KINDS, SENSORS
from vigil.events.structs import ENV_LEN, PrefixKey, VigilCfg
from vigil.kernel.filters import DEFAULT_RINGBUF, DEFAULT_RINGBUF_HI, open_filter_entries

log = logging.getLogger("vigil.kernel.sensors")

# Optional programs: a better hook for something the sensor's other programs
# already do (vigil.kernel.probe_features says which and why).  They are kept
# out of the sensor's load and loaded afterwards alone, on all of its maps, so
# a kernel without the hook costs one refused load and one log line, never the
# sensor: program -> what it adds.
OPTIONAL = {
    "open__identity": "file identity from fentry/security_file_open (else read through the "
                      "new fd at the open's exit)",
}
# Programs written for one kernel's signature of a BTF tracepoint that changed:
# program -> (group, tracepoint, its number of arguments).  Of each group the first
# program whose tracepoint this kernel's BTF has with that many arguments is loaded,
# the others not at all (not refused: not this kernel's); when none matches, the
# first is, so the kernel's refusal names what is missing.
VARIANTS = {
    "open__uring_submit": ("uring_submit", "io_uring_submit_req", 1),        # 6.12, 6.18
    "open__uring_submit_sqe": ("uring_submit", "io_uring_submit_sqe", 2),    # 6.1
    "open__uring_complete": ("uring_complete", "io_uring_complete", 3),      # 6.18
    "open__uring_complete_v61": ("uring_complete", "io_uring_complete", 7),  # 6.1, 6.12
}


def variants_unused(names) -> set:
    """The VARIANTS among ``names`` this kernel does not need."""
    groups: dict = {}
    for n in names:
        if n in VARIANTS:
            groups.setdefault(VARIANTS[n][0], []).append(n)
    unused = set()
    for members in groups.values():
        arity = libbpf.tp_btf_arity(*(VARIANTS[n][1] for n in members))
        pick = next((n for n in members if arity[VARIANTS[n][1]] == VARIANTS[n][2]), members[0])
        unused.update(n for n in members if n != pick)
    return unused


SHARED_MAPS = ("events", "events_hi", "vigil_config", "stats", "ignore_pids", "ignore_comms",
               "cgroup_scope", "open_prefixes", "watched_inodes", "watched_bits", "budgets",
               "l7_events", "l7_socks", "l7_tls_calls")
# programs attached to user-space functions: not at start, but by their owner
# (tls.bpf.c: vigil.l7.tls, once per library file)
UPROBE_SECTIONS = ("uprobe", "uretprobe")
SCOPES = {"all": 0, "host": 1, "containers": 2}


def bpf_dir() -> Path:
    env = os.environ.get("VIGIL_BPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "bpf" / "build"


def program_kind(name: str):
    """Kind served by a program, from its name prefix; None if unknown."""
    return KIND_BY_NAME.get(name.split("__", 1)[0])


@dataclass
class ProgramState:
    sensor: str
    name: str
    section: str
    kind: Kind | None
    loaded: bool = False
    attached: bool = False
    error: str = ""
    optional: bool = False      # an OPTIONAL program: refused = the sensor's own way serves


@dataclass
class SensorReport:
    programs: list = field(default_factory=list)

    def by_status(self):
        ok = [p for p in self.programs if p.attached]
        bad = [p for p in self.programs if p.error]
        return ok, bad


class SensorManager:
    """Loads, configures, attaches and detaches vigil's BPF sensors."""

    def __init__(self, kinds, ringbuf_size: int = DEFAULT_RINGBUF, args_max: int = 4096,
                 directory: Path | None = None, ignore_self: bool = True,
                 ringbuf_hi_size: int = DEFAULT_RINGBUF_HI, l7_ringbuf_size: int = 0,
                 l7_connections: int = 0, l7_tls_libraries: int = 32):
        self.kinds = {Kind(k) for k in kinds}
        # our own pid is ignored before anything is attached: attaching opens
        # tracefs files, which would otherwise be reported
        self.ignore_self = ignore_self
        self.ringbuf_size = ringbuf_size
        self.ringbuf_hi_size = ringbuf_hi_size
        self.args_max = args_max
        # L7 (vigil.l7): its ring and connection table; one page / a few
        # entries when L7 is off (every object declares them)
        self.l7_ringbuf_size = l7_ringbuf_size or 4096
        self.l7_connections = l7_connections or 256
        # the TLS uprobes: library files probed at most (0: tls.bpf.c not loaded)
        self.l7_tls_libraries = l7_tls_libraries
        self.directory = Path(directory) if directory else bpf_dir()
        self.objects = {}        # sensor -> BpfObject
        self.links = []
        self.maps = {}           # shared map name -> Map
        self._owner = None       # the object that owns the shared maps
        self.report = SensorReport()
        self._cfg = VigilCfg()
        self._watch_bits = None  # what watched_bits holds (set_watched_inodes)
        self.started = False
        self.tracefs = None      # set by start(): where tracepoint ids are read
        self.tls = None          # the TLS uprobes (vigil.l7.tls.TlsProbes) once attached

    # --- lifecycle ---

    def start(self, configure=None) -> "SensorManager":
        """Load and attach.  configure(self), if given, runs once the maps
        exist and before anything is attached, so filters (open prefixes,
        scope, comms, DNS ports) hold from the first event on."""
        self.tracefs = environment.check_all()
        present = self.present_sensors()
        if not present:
            raise environment.EnvironmentProblem(
                f"no BPF objects in {self.directory}; build them with `make bpf` "
                "(or set VIGIL_BPF_DIR)")
        try:
            self._create_shared_maps(present[0])
            if self.ignore_self:
                self.ignore_pid(os.getpid())
            for sensor in SENSORS:
                if sensor not in present:
                    log.warning("sensor %s: object %s.bpf.o missing, skipped", sensor, sensor)
            for sensor in present:
                self._load_sensor(sensor)
            if configure is not None:
                configure(self)
            self._write_cfg()
            self._attach()
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def stop(self) -> None:
        if self.tls is not None:
            self.tls.close()
            self.tls = None
        perf_fds = [fd for fd in detach_all(self.links) if fd is not None]
        self.links = []
        release_later(perf_fds)
        for obj in self.objects.values():
            obj.close()
        self.objects = {}
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        self.maps = {}
        self._watch_bits = None
        self.started = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- loading ---

    def present_sensors(self) -> list:
        """Sensors whose object is in the directory: the registry's in its
        order, then any other object there."""
        found = {p.name[:-len(".bpf.o")] for p in self.directory.glob("*.bpf.o")}
        return [s for s in SENSORS if s in found] + sorted(found - set(SENSORS))

    def _path(self, sensor: str) -> str:
        return str(self.directory / f"{sensor}.bpf.o")

    def _create_shared_maps(self, sensor: str) -> None:
        """Load one object with its programs switched off: it owns the
        shared maps, which every sensor then reuses."""
        obj = libbpf.BpfObject(self._path(sensor))
        try:
            for p in obj.programs():
                p.autoload = False
            obj.set_max_entries("events", self.ringbuf_size)
            obj.set_max_entries("events_hi", self.ringbuf_hi_size)
            obj.set_max_entries("l7_events", self.l7_ringbuf_size)
            obj.set_max_entries("l7_socks", self.l7_connections)
            obj.load()
            self.maps = {name: obj.map(name) for name in SHARED_MAPS}
        except BaseException:
            obj.close()
            raise
        self._owner = obj

    def _open(self, sensor: str, only=None) -> libbpf.BpfObject:
        """Open a sensor's object on the shared maps, autoloading the programs
        of wanted kinds (and, given only, of those names only)."""
        obj = libbpf.BpfObject(self._path(sensor))
        try:
            for name in SHARED_MAPS:
                obj.reuse_map(name, self.maps[name].fd)
            try:
                obj.set_const("cfg_args_max", struct.pack("<I", self.args_max))
            except KeyError:
                pass        # an object without the setting
            tls_off = sensor == "tls" and not self.l7_tls_libraries
            unused = variants_unused(p.name for p in obj.programs())
            for p in obj.programs():
                kind = program_kind(p.name)
                # enforcement programs are vigil.enforce's to load and attach
                p.autoload = (kind in self.kinds and kind not in ENFORCE_KINDS and not tls_off
                              and p.name not in unused
                              and (p.name in only if only is not None
                                   else p.name not in OPTIONAL))
        except BaseException:
            obj.close()
            raise
        return obj

    def _load_sensor(self, sensor: str) -> None:
        obj = self._open(sensor)
        states = {p.name: ProgramState(sensor, p.name, p.section, program_kind(p.name))
                  for p in obj.programs() if p.autoload}
        if not states:
            obj.close()
            return
        self.report.programs.extend(states.values())
        names = set(states)
        try:
            obj.load()
        except libbpf.BpfError as first:
            obj.close()
            log.debug("sensor %s: object load failed (%s); probing programs one by one",
                      sensor, first)
            good = set()
            for name in sorted(names):
                one = self._open(sensor, {name})
                try:
                    one.load()
                    good.add(name)
                except libbpf.BpfError as e:
                    states[name].error = f"refused by the kernel: {e.details or e}"
                finally:
                    one.close()
            if not good:
                return
            obj = self._open(sensor, good)
            try:
                obj.load()
            except BaseException:
                obj.close()
                raise
            names = good
        except BaseException:
            obj.close()
            raise
        for name in names:
            states[name].loaded = True
        self.objects[sensor] = obj
        self._load_optional(sensor, obj)

    def _load_optional(self, sensor: str, main) -> None:
        """The sensor's OPTIONAL programs of wanted kinds, each loaded alone
        on every map of the loaded object; one info line when the kernel
        refuses one (the sensor's own programs do the work then)."""
        probe = libbpf.BpfObject(self._path(sensor))
        try:
            wanted = [p.name for p in probe.programs() if p.name in OPTIONAL
                      and program_kind(p.name) in self.kinds]
            sections = {p.name: p.section for p in probe.programs()}
        finally:
            probe.close()
        for name in wanted:
            st = ProgramState(sensor, name, sections[name], program_kind(name))
            st.optional = True
            obj = self._open(sensor, {name})
            try:
                for mname in main.map_names():
                    if not mname.startswith(".") and mname not in SHARED_MAPS:
                        obj.reuse_map(mname, main.map(mname).fd)
                obj.load()
            except libbpf.BpfError as e:
                obj.close()
                from vigil.kernel.probe import explain_refusal
                st.error = explain_refusal(e, "load")
                log.info("sensor %s: optional %s (%s) not used: %s", sensor, name,
                         st.section, st.error)
                self.report.programs.append(st)
                continue
            st.loaded = True
            self.report.programs.append(st)
            self.objects[f"{sensor}+{name}"] = obj

    def _attach(self) -> None:
        states = {(p.sensor, p.name): p for p in self.report.programs}
        uprobes = {}
        for key, obj in self.objects.items():
            sensor = key.split("+", 1)[0]      # "file+open__identity": an optional program
            for prog in obj.programs():
                st = states.get((sensor, prog.name))
                if st is None or not st.loaded or not prog.autoload:
                    continue
                if prog.section.startswith(UPROBE_SECTIONS):
                    uprobes.setdefault(sensor, obj)     # attached per library below
                    continue
                try:
                    self.links.append(self._attach_one(prog))
                    st.attached = True
                except libbpf.BpfError as e:
                    if e.errno == errno.ENOENT and prog.section.startswith(("tp/", "tracepoint/")):
                        st.error = (f"tracepoint {prog.section.split('/', 1)[1]} does not exist "
                                    "on this kernel")
                    else:
                        st.error = f"attach failed: {e.strerror}"
                    if st.optional:
                        log.info("sensor %s: optional %s (%s) not used: %s", sensor, prog.name,
                                 prog.section, st.error)
        self._warn_disabled()
        if "tls" in uprobes:
            self._attach_tls(uprobes["tls"], states)
        attached = [p for p in self.report.programs if p.attached]
        log.info("%d programs attached for kinds %s", len(attached),
                 ",".join(sorted(k.label for k in self.kinds)))

    def _attach_tls(self, obj, states) -> None:
        """The TLS uprobes (tls.bpf.c): once per libssl.so.3 file, the host's
        and those processes map now or later (vigil.l7.tls)."""
        from vigil.l7.tls import TlsProbes
        self.tls = TlsProbes(obj, max_libs=self.l7_tls_libraries).start()
        for p in obj.programs():
            st = states.get(("tls", p.name))
            if st is not None and st.loaded:
                st.attached = bool(self.tls.libs)

    def _warn_disabled(self) -> None:
        """One line for every program this kernel refused, by kind (events of
        a kind whose programs are all disabled are not seen at all)."""
        bad = [p for p in self.report.programs if p.error and not p.optional]
        if not bad:
            return
        kinds = sorted({p.kind.label for p in bad if p.kind is not None})
        lost = [k for k in kinds
                if not any(p.attached for p in self.report.programs
                           if p.kind is not None and p.kind.label == k)]
        what = (f"no {', '.join(lost)} events on this kernel; " if lost else "")
        log.warning("%s%d programs disabled: %s", what, len(bad),
                    "; ".join(f"{p.sensor}/{p.name} ({p.section}): {p.error}" for p in bad))

    def _attach_one(self, prog) -> libbpf.Link:
        # syscall tracepoints: the id comes from the tracefs vigil checked (or
        # mounted), which need not be where libbpf would look
        sec = prog.section
        if sec.startswith(("tp/", "tracepoint/")) and self.tracefs:
            parts = sec.split("/")
            if len(parts) == 3:
                return prog.attach_tracepoint(self.tracefs, parts[1], parts[2])
        return prog.attach()

    def active_kinds(self) -> set:
        """Kinds with at least one attached program."""
        return {p.kind for p in self.report.programs if p.attached}

    # --- configuration (takes effect at once) ---

    def _write_cfg(self) -> None:
        mask = 0
        for k in self.kinds:
            mask |= 1 << int(k)
        self._cfg.kinds = mask
        self.maps["vigil_config"].update(struct.pack("<I", 0), bytes(self._cfg))

    def set_kinds(self, kinds) -> None:
        """Which kinds are delivered (programs for new kinds need a restart)."""
        self.kinds = {Kind(k) for k in kinds}
        self._write_cfg()

    def ignore_pid(self, pid: int, on: bool = True, inherit: bool = False) -> None:
        """Drop a process's events in the kernel; with inherit, also those of
        every process it starts from now on (until they exit)."""
        m = self.maps["ignore_pids"]
        key = struct.pack("<I", pid)
        if on:
            m.update(key, b"\x02" if inherit else b"\x01")
        else:
            m.delete(key)

    def ignore_comm(self, comm: str, on: bool = True) -> None:
        m = self.maps["ignore_comms"]
        key = comm.encode()[:15].ljust(16, b"\0")
        if on:
            m.update(key, b"\x01")
        else:
            m.delete(key)
        self._cfg.comm_filter = 1 if any(True for _ in m.keys()) else 0
        self._write_cfg()

    def set_open_prefixes(self, prefixes) -> None:
        """Only opens below these path prefixes are sent up; None = all.

        A list wants every open below each prefix; a dict maps a prefix to
        the opens it wants: OPEN_WANT_READ (1, O_RDONLY/O_RDWR), OPEN_WANT_WRITE
        (2, O_WRONLY/O_RDWR, O_CREAT, O_TRUNC) or both (3).  An open is sent
        when it is either of the modes wanted for its path; a prefix also wants
        what every shorter prefix covering it wants ("" covers every path).
        """
        m = self.maps["open_prefixes"]
        if prefixes is None:
            self._cfg.open_filter = 0
            self._write_cfg()
            m.clear()
            return
        want = open_filter_entries(prefixes)
        keys = set()
        for b, mask in want.items():
            k = bytes(PrefixKey(len(b) * 8, b))
            m.update(k, bytes((mask,)))
            keys.add(k)
        for k in list(m.keys()):
            if k not in keys:
                m.delete(k)
        self._cfg.open_filter = 1
        self._write_cfg()

    def set_watched_inodes(self, entries: dict) -> None:
        """The files recognised by identity: {(kdev, ino): value} (file and
        children bits, vigil.kernel.watched); replaces what was there."""
        from vigil.kernel.watched import inode_key, watch_bits
        m = self.maps["watched_inodes"]
        want = {inode_key(d, i): bytes((v,)) for (d, i), v in entries.items()}
        # the Bloom bits in front of the map: every key's bit is set before
        # the key goes in, and cleared only once the keys are gone
        bits = watch_bits(entries)
        old = self._watch_bits
        if old is None or bits != old:
            union = bits if old is None else (int.from_bytes(bits, "little") | int.from_bytes(
                old, "little")).to_bytes(len(bits), "little")
            self.maps["watched_bits"].update(struct.pack("<I", 0), union)
        for k in list(m.keys()):
            if k not in want:
                m.delete(k)
        for k, v in want.items():
            m.update(k, v)
        if old is not None and bits != old:
            self.maps["watched_bits"].update(struct.pack("<I", 0), bits)
        self._watch_bits = bits

    def set_scope(self, scope: str) -> None:
        """all | host | containers: who is watched, decided in the kernel."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        self._cfg.scope = SCOPES[scope]
        self._write_cfg()

    def set_cgroup_scope(self, cgroup_id: int, in_scope) -> None:
        """Per-cgroup override: True/False, or None to remove it."""
        m = self.maps["cgroup_scope"]
        key = struct.pack("<Q", cgroup_id)
        if in_scope is None:
            m.delete(key)
        else:
            m.update(key, b"\x01" if in_scope else b"\x00")
        self._cfg.cgroup_filter = 1 if any(True for _ in m.keys()) else 0
        self._write_cfg()

    def set_ok_only(self, kinds) -> None:
        """Kinds whose failed results (ret < 0, but -EINPROGRESS) are dropped
        in the kernel: no rule can match them."""
        mask = 0
        for k in kinds:
            mask |= 1 << int(k)
        self._cfg.ok_only = mask
        self._write_cfg()

    def set_budget(self, rate: int, burst: int) -> None:
        """Each process may send ``rate`` events a second on the bulk ring,
        ``burst`` at once; 0 = no budget."""
        self._cfg.budget_rate = max(0, int(rate))
        self._cfg.budget_burst = max(1, int(burst)) if rate else 0
        self._write_cfg()

    def set_env_max(self, n: int) -> None:
        """Each exec carries the first ``n`` bytes of the environment (at most
        ENV_LEN); 0 = none (the shorter record)."""
        self._cfg.env_max = max(0, min(int(n), ENV_LEN))
        self._write_cfg()

    def set_l7_protocols(self, bits: int) -> None:
        """The L7 protocols detected (enum l7_proto bits); 0 = none."""
        self._cfg.l7_protocols = int(bits)
        self._write_cfg()

    def set_dns_ports(self, ports) -> None:
        obj = self.objects.get("dns")
        if obj is None:
            return
        m = obj.map("dns_ports")
        m.clear()
        for p in ports:
            m.update(struct.pack("<H", p), b"\x01")

    # --- counters ---

    def stats(self) -> dict:
        """{kind label: {"sent": n, "dropped": n, ...}} summed over CPUs
        (vigil.kernel.counters.by_kind)."""
        return counters.by_kind(self.maps["stats"])

    def losses(self) -> dict:
        """Events not sent since the start, by reason (counters.losses)."""
        return counters.losses(self.maps["stats"])

    def dropped_total(self) -> int:
        """Events lost (rings full, no stash slot); not those over budget."""
        return sum(counters.lost_of(v) for v in self.stats().values())
