"""`vigil run`: sensors -> pipeline -> rules -> alerts (store first, then outputs).

The rules decide what the kernel sends up: the event kinds some enabled rule
can match, (when every open rule names path prefixes) the open prefixes, and
the kinds whose failed results no rule can match.  Events the kernel lost
are alerts (vigil.alerts.drops).  SIGHUP, or a change of the watched files
(vigil.config.watch), reloads the configuration, rules and policies; a reload
that fails keeps the last good set and says so by an alert.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from vigil.alerts.drops import DropReporter
from vigil.rules import default_rules_files
from vigil.config import Config, ConfigError, expand_rules_paths, kubernetes_enabled
from vigil.state.containers.scope import in_scope
from vigil.events.structs import ENV_LEN
from vigil.kernel.filters import KernelFilters
from vigil.pipeline import Pipeline
from vigil.state.proctable import ProcessTable

log = logging.getLogger("vigil.agent")


def rules_files(cfg: Config) -> list:
    """The configured rules files (directories expanded), else the shipped ruleset."""
    return expand_rules_paths(cfg["rules"] or default_rules_files())


def load_engine(cfg: Config, proctable, files: list, selection=None):
    """A rules engine set up as the configuration says, with ``files`` loaded
    and the rules ``selection`` (-T/-t/-D) leaves out turned off."""
    from vigil.rules.engine import RuleEngine
    eng = RuleEngine(min_priority=cfg["min_priority"], proctable=proctable,
                     rule_matching=cfg["rule_matching"], max_file_bytes=cfg["rules_max_size"])
    eng.load(files)
    if selection:
        eng.select(selection)
    return eng


def dry_run(cfg: Config, selection=None) -> dict:
    """What `vigil run --dry-run` checks, without watching anything (as
    Falco's --dry-run): the rules load, the output sections name known keys,
    and the BPF objects the rules need are built.  Raises RulesError or
    ConfigError; returns what it found."""
    from vigil.alerts.outputs.registry import output_types
    from vigil.config.section import Section
    from vigil.events.kinds import CGROUP_KINDS, LIFECYCLE, SPECS
    from vigil.kernel.sensors import bpf_dir
    files = rules_files(cfg)
    engine = load_engine(cfg, None, files, selection)
    outputs = cfg.get("outputs") or {}
    for name, t in output_types().items():
        raw = outputs.get(name)
        if isinstance(raw, dict):
            try:
                Section(("outputs", name), raw, t.defaults)
            except ConfigError as e:
                raise cfg.locate(e) from None
    from vigil import l7
    from vigil.events.kinds import kernel_kinds_for
    from vigil.profiles import kernel_kinds
    kinds = engine.required_kinds() | kernel_kinds(cfg)
    needed = (kernel_kinds_for(kinds) | l7.kernel_kinds(cfg, kinds) | LIFECYCLE
              | (CGROUP_KINDS if cfg["containers"]["enabled"] else set()))
    sensors = sorted({SPECS[k].sensor for k in needed})
    missing = [s for s in sensors if not (bpf_dir() / f"{s}.bpf.o").exists()]
    return {"files": files, "rules": len(engine.rules), "enabled": len(engine.enabled_rules()),
            "kinds": sorted(k.label for k in kinds), "sensors": sensors,
            "missing_sensors": missing, "bpf_dir": str(bpf_dir())}


class EventClock:
    """The time of the events being replayed, in seconds: a replay's rate
    limiter folds by the recorded times as the live one folds by the time
    the alerts came (which is the events' time plus a few milliseconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, time_ns) -> None:
        """To an event's time (ns); a record without a usable time leaves it."""
        if isinstance(time_ns, (int, float)) and not isinstance(time_ns, bool):
            self.now = max(self.now, time_ns / 1e9)


def replay(cfg: Config, path: str, stream=None, selection=None) -> int:
    """The rules over a capture file, through the alert pipeline the
    configuration gives (rate limit and folding as live, ticked every 100 ms
    of event time as the live loop does); returns the number of events.
    Raises RulesError, ConfigError, CaptureError."""
    from vigil.events.capture import replay as feed_capture
    pipe = Pipeline(set(), seed=False)
    engine = load_engine(cfg, pipe.proctable, rules_files(cfg), selection)
    clock = EventClock()
    alerts = cfg.build_alert_pipeline(stream=stream, clock=clock)
    last_tick = [0.0]

    def on_event(ev) -> None:
        clock.advance(ev.time)
        if clock.now - last_tick[0] >= Pipeline.TICK_SECONDS:
            last_tick[0] = clock.now
            alerts.tick(clock.now)
        for alert in engine.evaluate(ev):
            alerts.emit(alert)

    pipe.add_handler(on_event)
    try:
        return feed_capture(path, pipe)
    finally:
        alerts.close()


class Agent:
    def __init__(self, cfg: Config, *, stream=None, extra_handlers=(), selection=None,
                 notify=None, config_loader=None):
        self.cfg = cfg
        # reads the configuration again at a reload (None: the rules files only)
        self.config_loader = config_loader
        self.watcher = None         # vigil.config.watch.ConfigWatcher
        self.selection = selection      # -T/-t/-D, applied at every (re)load
        # where "rules reloaded" and the like go (the CLI prints them)
        self.notify = notify or log.info
        self.stream = stream
        self.extra_handlers = list(extra_handlers)
        self.proctable = ProcessTable()
        self.engine = None
        self.rules_files: list = []
        self.pipeline: Optional[Pipeline] = None
        self.alerts = None
        self.resolver = None
        self.kube = None
        self.scope_tracker = None
        self.scope_policy = None
        self.enforcer = None        # vigil.enforce.Enforcer when policies are configured
        self.killer = None          # vigil.enforce.rulekill.RuleKiller: rules with enforce: kill
        self.metrics = None         # vigil.metrics.AgentMetrics unless metrics.address is ""
        self._started = False
        self.profiles = None        # vigil.profiles.manager.ProfileManager when enabled
        # vigil.l7.tracker.L7Tracker: requests paired with their responses; consumers of
        # completed requests (fn(L7Request)) append themselves to agent.l7.sinks
        self.l7 = None
        self._http_events = None    # the sink making http events, while a rule needs them
        self.reloads = 0
        self.reload_errors = 0
        self._past_matches: dict = {}   # (rule, priority) -> alerts of engines reloaded away
        self.scope_dropped = 0
        self.drops = None            # the DropReporter, once started
        self._reload_requested = False
        self._restart_pending = False
        self._running = False
        self._stopping = False

    # --- rules ---

    def _build_engine(self, files: list, cfg: Optional[Config] = None):
        eng = load_engine(cfg or self.cfg, self.proctable, files, self.selection)
        for w in eng.warnings:
            log.warning("%s", w)
        return eng

    def _kernel_kinds(self, eng, cfg: Optional[Config] = None) -> set:
        from vigil import l7
        from vigil.events.kinds import kernel_kinds_for
        from vigil.profiles import kernel_kinds
        cfg = cfg or self.cfg
        rule_kinds = eng.required_kinds()
        return kernel_kinds_for(rule_kinds | kernel_kinds(cfg)) | l7.kernel_kinds(cfg, rule_kinds)

    def _setup_l7(self, eng, filters) -> None:
        """The L7 protocols in the kernel, and the http events while a rule needs them."""
        from vigil.events import Kind
        from vigil.l7 import wanted_protocols
        from vigil.l7.tracker import protocol_bits
        protos = wanted_protocols(self.cfg, eng.required_kinds())
        filters.set_l7_protocols(protocol_bits(protos))
        if protos:
            filters.l7_ringbuf_size = self.cfg["l7"]["ringbuf_size"]
            filters.l7_connections = max(4096, 4 * self.cfg["l7"]["max_connections"])
            if self.metrics is not None and self.metrics.l7 is None:
                self.metrics.add_l7(self.l7, self.resolver, self.cfg["l7"]["max_peers"])
                # the service map and the per-process counts of `vigil top` (docs/SERVICES.md)
                self.l7.sinks.extend(self.metrics.l7_sinks(self.resolver, self.kube,
                                                           self.proctable))
        l7 = self.cfg["l7"]
        filters.l7_tls_libraries = l7["tls_max_libraries"] if l7["tls"] else 0
        sinks = self.l7.sinks
        if Kind.HTTP in eng.required_kinds():
            if self._http_events is None:
                from vigil.l7.events import HttpEvents
                self._http_events = HttpEvents(lambda ev: self.pipeline.process(ev))
                sinks.append(self._http_events)
        elif self._http_events is not None:
            sinks.remove(self._http_events)
            self._http_events = None

    def _open_prefixes(self, eng):
        from vigil.profiles import open_prefixes
        return open_prefixes(self.cfg, eng.open_path_filter())

    def load_rules(self) -> None:
        files = rules_files(self.cfg)
        self.engine = self._build_engine(files)
        self.rules_files = files
        log.info("loaded %d rules from %d files", len(self.engine.rules), len(files))

    def _count_matches(self, eng) -> None:
        for name, n in (eng.matches.items() if eng is not None else ()):
            r = eng.rule(name)
            key = (name, r.priority if r is not None else "?")
            self._past_matches[key] = self._past_matches.get(key, 0) + n

    def alert_counts(self) -> dict:
        """(rule, priority) -> alerts the rules gave since start, across reloads
        (before rate limiting folds repeats)."""
        out = dict(self._past_matches)
        eng = self.engine
        for name, n in (eng.matches.items() if eng is not None else ()):
            r = eng.rule(name)
            key = (name, r.priority if r is not None else "?")
            out[key] = out.get(key, 0) + n
        return out

    def request_reload(self) -> None:
        """Ask for a rules reload; safe from a signal handler (the reload runs
        from the event loop, never in the middle of reading the ring)."""
        self._reload_requested = True

    def _reload_failed(self, what: str, error: str) -> bool:
        from vigil.config.watch import reload_failed_alert
        self.reload_errors += 1
        log.error("%s reload failed, keeping the last good %s: %s", what, what, error)
        if self.alerts is not None:
            self.alerts.emit(reload_failed_alert(what, error))
        return False

    def watched_paths(self) -> list:
        """The files a reload reads: the configuration, rules and policies."""
        cfg = self.cfg
        return [p for p in ([cfg.path] if cfg.path and self.config_loader else [])
                + list(cfg["rules"]) + list(cfg["policies"]) if p]

    def reload(self) -> bool:
        """Reload the configuration (with a config_loader), then the rules files,
        then the policies; on any error keep the running set."""
        from vigil.rules.loader import RulesError
        cfg = self.cfg
        if self.config_loader is not None:
            try:
                cfg = self.config_loader()
            except ConfigError as e:
                return self._reload_failed("configuration", str(e))
        files = rules_files(cfg)
        try:
            eng = self._build_engine(files, cfg)
        except (RulesError, OSError) as e:
            return self._reload_failed("rules", str(e))
        self.cfg = cfg
        self._count_matches(self.engine)
        self.engine = eng
        eng.names.prime()          # the new rules' domain names (fd.sip.name ...)
        self.rules_files = files
        self.reloads += 1
        if self.enforcer is not None and not self.enforcer.reload():   # with the rules
            self._reload_failed("policies", getattr(self.enforcer, "reload_error", ""))
        p = self.pipeline
        if p is not None:
            f = p.filters
            f.set_open_prefixes(self._open_prefixes(eng))
            f.set_ok_only(eng.ok_only_kinds())
            f.set_env_max(ENV_LEN if eng.wants_env() else 0)
            self._setup_l7(eng, f)
            if f.set_kinds(self._kernel_kinds(eng)):
                # programs for new kinds must be loaded: done by run() once the
                # event loop has returned (the loop holds the current ring)
                self._restart_pending = True
                if self._running:
                    p.pause()
                else:
                    self._restart_sensors()
        n, nf = len(eng.rules), len(files)
        self.notify(f"rules reloaded: {n} rules from {nf} "
                    f"file{'s' if nf != 1 else ''} ({len(eng.enabled_rules())} enabled)")
        return True

    def _restart_sensors(self) -> None:
        self._restart_pending = False
        log.info("new event kinds needed: restarting sensors")
        self.pipeline.restart_sensors()   # applies every filter again
        if self.enforcer is not None:
            self.enforcer.swap_sensors(self.pipeline.sensors)   # onto the new ring buffer
        if self.drops is not None:
            self.drops.reset()            # the new sensors count from 0

    # --- lifecycle ---

    def start(self) -> "Agent":
        cfg = self.cfg
        from vigil.metrics import make_metrics
        self.metrics = make_metrics(cfg, self)     # /healthz at once, /readyz once started
        try:
            self.load_rules()
        except BaseException:
            self.stop()
            raise
        self.engine.names.prime()      # rule domain names resolved before the first connect
        self.alerts = cfg.build_alert_pipeline(stream=self.stream)
        try:
            if cfg["containers"]["enabled"]:
                from vigil.state.containers.resolver import ContainerResolver
                self.resolver = ContainerResolver(grace=cfg["containers"]["grace"],
                                                  hold=cfg["containers"]["hold"])
                self.resolver.seed()
                if kubernetes_enabled(cfg):
                    self._start_kube()
            if cfg["policies"]:
                from vigil.enforce import make_enforcer
                self.enforcer = make_enforcer(cfg, self.resolver, self.kube, self.alerts.emit)
            if cfg["profiles"]["enabled"]:
                from vigil.profiles import make_manager
                self.profiles = make_manager(cfg, self.proctable, self.alerts,
                                             lambda: self.pipeline.dropped_total()
                                             if self.pipeline is not None else 0)
            s = cfg["sensors"]
            filters = KernelFilters(
                self._kernel_kinds(self.engine), open_prefixes=self._open_prefixes(self.engine),
                ok_only=self.engine.ok_only_kinds(),
                budget=(s["budget"]["rate"], s["budget"]["burst"]),
                scope=cfg["scope"]["mode"], dns_ports=s["dns_ports"],
                ignore_comms=s["ignore_comms"], ringbuf_size=s["ringbuf_size"],
                ringbuf_hi_size=s["ringbuf_hi_size"], args_max=s["args_max"],
                env_max=ENV_LEN if self.engine.wants_env() else 0)
            self.pipeline = p = Pipeline(filters, proctable=self.proctable,
                                         containers=self.resolver, ignore_children=True)
            from vigil.l7.tracker import L7Tracker
            self.l7 = L7Tracker(cfg["l7"]["max_connections"])
            p.ring_handlers["l7_events"] = self.l7.on_raw
            self._setup_l7(self.engine, filters)
            d = cfg["syscall_event_drops"]
            self.drops = DropReporter(p.losses, p.kernel_stats, self.alerts.emit,
                                      actions=d["actions"], rate=d["rate"],
                                      max_burst=d["max_burst"])
            p.loss_handlers.append(self.drops.on_record)
            self.pipeline.add_handler(self.on_event)
            if self.profiles is not None:
                self.pipeline.add_handler(self.profiles.on_event)
                self.pipeline.add_ticker(self.profiles.tick)
            for h in self.extra_handlers:
                self.pipeline.add_handler(h)
            self.pipeline.add_ticker(self._tick)
            self.pipeline.start()
            if self.enforcer is not None:
                self.enforcer.start(self.pipeline.sensors)
                self.pipeline.add_handler(self.enforcer.on_event)
                self.pipeline.add_ticker(self.enforcer.tick)
            self._setup_namespace_scope()
            if cfg["watch_config_files"]:
                from vigil.config.watch import ConfigWatcher
                self.watcher = ConfigWatcher(self.watched_paths, self.request_reload).start()
            if self.metrics is not None:
                self.metrics.attach(self.resolver, s["dns_ports"])
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def ready(self) -> bool:
        """Sensors attached and rules loaded (the metrics endpoint's /readyz)."""
        p = self.pipeline
        return (self._started and not self._stopping and self.engine is not None
                and p is not None and p.sensors is not None)

    def _start_kube(self) -> None:
        try:
            from vigil.state.containers.kube import KubePodCache
            self.kube = KubePodCache.from_env(self.cfg["kubernetes"].get("node_name") or None)
            if self.kube is not None:
                self.kube.start()
                if hasattr(self.resolver.fetcher, "kube"):
                    self.resolver.fetcher.kube = self.kube
        except Exception as e:  # enrichment is optional; never fatal
            log.warning("Kubernetes API enrichment disabled: %s", e)
            self.kube = None

    def _setup_namespace_scope(self) -> None:
        ns = self.cfg["scope"].get("namespaces") or {}
        if not (ns.get("include") or ns.get("exclude")) or self.resolver is None:
            return
        from vigil.state.containers.scope import ScopePolicy, ScopeTracker
        policy = self.scope_policy = ScopePolicy.from_config({"namespaces": ns})

        filters = self.pipeline.filters   # kept across sensor restarts

        def on_change(cgid, inside):
            # a deny-map: only cgroups known to be out of scope are dropped in the kernel
            filters.set_cgroup_scope(cgid, False if inside is False else None)

        self.scope_tracker = ScopeTracker(self.resolver, policy, on_change)
        for cgid in self.scope_tracker.cgroup_ids_out_of_scope():
            filters.set_cgroup_scope(cgid, False)

    def on_event(self, ev) -> None:
        if self.scope_policy is not None and in_scope(self.scope_policy, ev.container) is False:
            # the kernel drops a namespace's containers once their namespace is
            # known; a brand-new container's first events can get there first (the
            # kernel fails open) and were held until its metadata came: drop them here
            self.scope_dropped += 1
            return
        timer = self.metrics.rule_timer if self.metrics is not None else None
        alerts = self.engine.evaluate(ev) if timer is None else timer(self.engine.evaluate, ev)
        for alert in alerts:
            kill = (self._killer().kill(ev, alert)
                    if alert.rule in self.engine.kill_rules else None)
            self.alerts.emit(alert)
            if kill is not None:
                self.alerts.emit(kill)

    def _killer(self):
        if self.killer is None:
            from vigil.enforce.rulekill import RuleKiller
            self.killer = RuleKiller(self.cfg["enforce"]["protected"])
        return self.killer

    def _tick(self, now: float) -> None:
        if self._reload_requested:
            self._reload_requested = False
            self.reload()
        self.alerts.tick()
        self.drops.tick(now)

    def run(self, duration: Optional[float] = None) -> None:
        """Until request_stop() or duration seconds; sensors restarted by a
        reload are swapped in between two runs of the event loop."""
        deadline = time.monotonic() + duration if duration else None
        while not self._stopping:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
            self._running = True
            try:
                self.pipeline.run(left)
            finally:
                self._running = False
            if self._stopping or not self._restart_pending:
                break
            self._restart_sensors()

    def request_stop(self, *_args) -> None:
        self._stopping = True
        if self.pipeline is not None:
            self.pipeline.request_stop()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self._started = False
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.enforcer is not None:
            self.enforcer.stop()
            self.enforcer = None
        if self.pipeline is not None:
            if self.drops is not None:
                self.drops.tick()        # what was lost last gets its report (rate permitting)
            self.pipeline.stop()
        if self.profiles is not None:
            self.profiles.close()
            self.profiles = None
        if self.alerts is not None:
            self.alerts.close(timeout=5.0)
            self.alerts = None
        if self.kube is not None:
            self.kube.stop()
            self.kube = None
        if self.resolver is not None:
            self.resolver.stop()
            self.resolver = None

    def stats(self) -> dict:
        out = {"pipeline": self.pipeline.stats() if self.pipeline else {},
               "rules": len(self.engine.rules) if self.engine else 0,
               "reloads": self.reloads, "reload_errors": self.reload_errors,
               "scope_dropped": self.scope_dropped}
        if self.drops is not None:
            out["drop_reports"] = self.drops.stats()
        if self.resolver is not None:
            out["containers"] = self.resolver.stats()
        if self.enforcer is not None:
            out["enforce"] = self.enforcer.stats()
        if self.watcher is not None:
            out["watch"] = self.watcher.stats()
        if self.killer is not None:
            out.setdefault("enforce", {}).update(self.killer.stats())
        if self.profiles is not None:
            out["profiles"] = self.profiles.stats()
        if self.l7 is not None:
            out["l7"] = dict(self.l7.stats, connections=len(self.l7.conns),
                             pending=self.l7.pending())
        return out


