"""Forward-resolved domain names for ``fd.sip.name`` and friends.

Like libsinsp's DNS manager, vigil never asks "what is this IP's name" (no
reverse DNS): the domain names written in rules are resolved (getaddrinfo,
so /etc/hosts and the system's resolvers answer), in the background, again
every ``refresh`` seconds, and a field asks which of those names currently
resolve to an fd's IP.

Each rules engine has its own cache (the names of its rules).  The background
thread runs only while the cache is asked: it stops when nobody looked for
``idle`` seconds or the cache is gone, and the next lookup starts it again
(the names resolved so far are kept meanwhile).  The agent primes it when it
takes a rule set, so resolution starts before the first event asks.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections import deque
import time
import weakref

log = logging.getLogger("vigil.state.dnsnames")


def _resolve(name):
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(i[4][0] for i in infos)


class NameCache:
    def __init__(self, refresh: float = 10.0, resolve=_resolve, workers: int = 8,
                 idle: float = 60.0, hosts: str = "/etc/hosts"):
        self.hosts = hosts
        self.refresh = refresh
        self.idle = idle
        self._asked = 0.0            # monotonic time of the last lookup
        self.resolve = resolve
        self.workers = workers
        self._names: set = set()
        self._addrs: dict = {}       # name -> frozenset of IP strings
        self._by_ip: dict = {}       # IP string -> tuple of names
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self.rounds = 0              # refresh rounds completed

    def watch(self, names) -> None:
        """Names to keep resolved (the ones rules compare these fields with)."""
        new = {str(n) for n in names if n} - self._names
        if not new:
            return
        with self._lock:
            self._names |= new
        self._wake.set()

    def names_for(self, ip) -> tuple:
        """The watched names resolving to ip.  The first call starts the
        background resolver (so loading rules alone never resolves anything)."""
        self._asked = time.monotonic()
        if self._thread is None:
            self.start()
        return self._by_ip.get(ip, ())

    def prime(self) -> None:
        """Resolve now, in the background, as if asked: a running agent calls it
        when it takes the rules, so the first connect is judged against
        resolved names (as Falco resolves them at start), not against none."""
        self._asked = time.monotonic()
        self._from_hosts_file()
        self.start()

    def _from_hosts_file(self) -> None:
        """The watched names the hosts file gives (what getaddrinfo answers first, and
        at once), taken now: a connect right after the rules load is judged against
        them while the DNS lookups, which may hang on a node without DNS, still run."""
        try:
            with open(self.hosts, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 20)
        except OSError:
            return
        found: dict = {}
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) < 2:
                continue
            try:
                ip = str(ipaddress.ip_address(parts[0]))
            except ValueError:
                continue
            for n in parts[1:]:
                found.setdefault(n.lower(), set()).add(ip)
        with self._lock:
            for name in self._names:
                ips = found.get(name.lower())
                if ips and name not in self._addrs:
                    self._addrs[name] = frozenset(ips)
            self._rebuild()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or not self._names:
                return
            self._thread = threading.Thread(target=_run, args=(weakref.ref(self),),
                                            name="vigil-dnsnames", daemon=True)
        self._thread.start()

    def refresh_now(self) -> None:
        """Resolve every watched name once (the background loop's one round)."""
        with self._lock:
            names = sorted(self._names)
        # daemon threads taking the next name as each is done: a name whose resolver
        # times out holds back only the worker resolving it (a name /etc/hosts
        # answers is never stuck behind it), and never the process's exit
        todo = deque(names)
        threads = [threading.Thread(target=self._resolve_all, args=(todo,), daemon=True)
                   for _ in range(min(self.workers, len(names)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.rounds += 1

    def _resolve_all(self, todo: deque):
        while True:
            try:
                name = todo.popleft()
            except IndexError:
                return
            addrs = self.resolve(name)
            with self._lock:
                self._addrs[name] = addrs
                self._rebuild()

    def _rebuild(self):
        by_ip: dict = {}
        for name, addrs in list(self._addrs.items()):
            for a in addrs:
                by_ip.setdefault(a, []).append(name)
        self._by_ip = {ip: tuple(sorted(ns)) for ip, ns in by_ip.items()}

    def _round(self) -> bool:
        """One background round; False when the thread should end."""
        if time.monotonic() - self._asked > self.idle:
            with self._lock:
                self._thread = None
            return False
        try:
            self.refresh_now()
        except Exception:      # never let the resolver thread die
            log.exception("resolving rule domain names failed")
        return True


def _run(ref) -> None:
    """The background loop; holds the cache only weakly, so a dropped engine's
    cache (and its thread) go away."""
    while True:
        cache = ref()
        if cache is None or not cache._round():
            return
        wake, refresh = cache._wake, cache.refresh
        del cache
        wake.wait(refresh)
        wake.clear()
