"""The generated matchers test a condition's AND/OR operands in the order of
least expected cost (codegen._KindGen.order), not as written: they must decide
exactly what the interpreted form (operands as written) decides, for every rule
of vigil's default rules and Falco's three files, on events whose names, paths
and command lines come from the rules' own constants (so rules and their
exceptions do match)."""
from __future__ import annotations

import posixpath
import random
import re

import pytest

from falco_files import SANDBOX, falco_files
from vigil.events import Event, Kind
from vigil.rules import RuleEngine
from vigil.rules.codegen import build_matcher, build_matcher_interp
from vigil.rules.condition import Cmp
from vigil.rules.parser import And, Not, Or
from vigil.state.containers.model import ContainerInfo
from vigil.state.proctable import ProcessTable, ProcInfo

DEFAULT = "src/vigil/rules/default/vigil_rules.yaml"


def _strings(node, out):
    if isinstance(node, (And, Or)):
        for c in node.items:
            _strings(c, out)
    elif isinstance(node, Not):
        _strings(node.item, out)
    elif isinstance(node, Cmp):
        vals = node.raw if isinstance(node.raw, tuple) else (node.raw,)
        out.update(v for v in vals if isinstance(v, str) and v)
    return out


def _world(eng, rng):
    words = sorted(set().union(*(_strings(r.ir, set()) for r in eng.rules)))
    names = [w for w in words if "/" not in w and " " not in w and len(w) < 16] or ["x"]
    paths = [w for w in words if w.startswith("/")] or ["/etc/shadow"]
    lines = [w for w in words if " " in w] or ["-c x"]
    pt = ProcessTable()
    pt.put(ProcInfo(1, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init"]))
    procs = []
    for i in range(300):
        pid = 100 + i
        comm = rng.choice(names)
        args = [comm] + rng.choice(lines).split()[:4] if rng.random() < 0.5 else [comm, "-x"]
        parent = rng.choice([1] + [p.pid for p in procs[-20:]])
        p = ProcInfo(pid, parent, comm, rng.choice(paths) if rng.random() < 0.3 else f"/usr/bin/{comm}",
                     args, cwd=rng.choice(["/", "/dev/shm/", "/tmp/"]), uid=rng.choice([0, 1000]),
                     tty=rng.choice(["", "pts0"]), start_time=rng.choice([0, 10**18]))
        pt.put(p)
        procs.append(p)
    containers = [None] + [ContainerInfo(id=f"{i:064x}", name=f"c{i}", image_repository=rng.choice(lines),
                                         privileged=rng.choice([True, False, None]),
                                         namespace=rng.choice(["default", "kube-system"]))
                           for i in range(1, 8)]
    return pt, procs, containers, names, paths, lines


def _events(eng, n, seed):
    rng = random.Random(seed)
    pt, procs, containers, names, paths, lines = _world(eng, rng)
    kinds = sorted(eng.required_kinds())
    out = []
    for i in range(n):
        p = rng.choice(procs)
        k = rng.choice(kinds)
        base = dict(time=10**18 + i * 10**9, pid=p.pid, tid=p.pid, ppid=p.ppid, uid=p.uid, gid=0,
                    comm=p.comm, cgroup_id=1)
        path = rng.choice(paths)
        if k is Kind.EXEC:
            ev = Event(k, exe=p.exe, args=p.args, cwd=p.cwd, tty=p.tty, loginuid=rng.choice([-1, 1000]),
                       ret=rng.choice([0, 0, -2]), **base)
        elif k in (Kind.CONNECT, Kind.ACCEPT, Kind.DNS, Kind.SOCKET):
            ev = Event(k, family=rng.choice(["AF_INET", "AF_INET6", "AF_UNIX"]),
                       proto=rng.choice(["tcp", "udp"]), saddr="10.0.0.5", sport=rng.randint(1, 65535),
                       daddr=rng.choice(["10.0.0.9", "93.184.216.34", "127.0.0.1", "169.254.169.254"]),
                       dport=rng.choice([22, 53, 80, 443, 2222, 4444, 6443]),
                       ret=rng.choice([0, 3, -115, -111]), fd=rng.choice([3, 4, 5]), query=rng.choice(names),
                       **base)
        elif k is Kind.OPEN:
            sc = rng.choice(["openat", "open", "openat2", "creat"])
            raw = path + rng.choice(["", "/x", "/../etc/passwd"])
            # paths arrive normalised, the raw one beside (as the pipeline does)
            ev = Event(k, syscall=sc, path=posixpath.normpath(re.sub("/+", "/", raw)), path_raw=raw,
                       flags=0 if sc == "creat" else rng.choice([0, 1, 2, 0o1101, 0o2000000, 0o200000, 0o101]),
                       ret=rng.choice([3, 4, -2, -13]), mode=0, **base)
        else:
            ev = Event(k, path=path, path2=rng.choice(paths), ret=rng.choice([0, -1]), mode=0o4755,
                       fd=3, newfd=rng.choice([0, 1, 2, 10]), fd_type="ipv4", **base)
        ev.proc = pt.get(p.pid)
        ev.container = rng.choice(containers)
        out.append(ev)
    return pt, out


def _check(files, n=6000):
    eng = RuleEngine.from_files(files)
    pt, evs = _events(eng, n, 7)
    eng.proctable = pt
    hits = 0
    for k in eng.required_kinds():
        rules = eng._kind_rules[int(k)]
        gen = build_matcher(k, rules, "all")
        ref = build_matcher_interp(k, rules, "all")
        for ev in (e for e in evs if e.kind is k):
            if eng._track_fds:
                eng.fds.observe(ev)
            got, want = gen(ev, eng), ref(ev, eng)
            assert got == want, (k, ev, gen.__vigil_source__ if got != want else "")
            hits += len(got or ())
    return eng, hits


def test_default_rules_decide_the_same_in_any_operand_order():
    eng, hits = _check([DEFAULT])
    assert hits > 100 and not eng.rule_errors


@pytest.mark.parametrize("upto", [SANDBOX])
def test_falco_rules_decide_the_same_in_any_operand_order(upto):
    eng, hits = _check(falco_files(upto))
    assert hits > 100 and not eng.rule_errors


def test_per_kind_extractors_agree_with_the_generic_ones():
    """A field's per-kind forms (fast functions, inline expressions) give what
    its generic extractor gives (outputs use the generic one), event by event."""
    from vigil.rules import fields as F
    eng = RuleEngine.from_files([DEFAULT])
    pt, evs = _events(eng, 4000, 11)
    eng.proctable = pt
    checked = 0
    for name, fd in F.FIELDS.items():
        if fd.fn is None:
            continue
        forms = dict(fd.fast)
        for k, expr in (fd.inline or {}).items():
            forms.setdefault(k, eval(f"lambda ev, cx: {expr}"))
        for k, fn in forms.items():
            for ev in evs:
                if k is not None and ev.kind is not k:
                    continue
                assert fn(ev, eng) == fd.fn(ev, eng), (name, k, ev)
                checked += 1
    assert checked > 10000
