"""The service map's pairing, naming and bounds, fed L7Request records as the L7
core hands them over (the end-to-end tests with real traffic are in
tests/test_service_map.py)."""
from __future__ import annotations

import math
import os
import subprocess

from vigil.l7.identity import Identities, external_name, ip_of
from vigil.l7.record import HTTP, INBOUND, OUTBOUND, REDIS, L7Request
from vigil.l7.servicemap import ServiceMap
from vigil.l7.stats import DURATION_BUCKETS, Hist, cumulative_of, quantile
from vigil.state.proctable import ProcessTable


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def rec(direction, local, peer, *, tgid, fd=5, status=200, proto=HTTP, dur=0.01, error=False):
    (lip, lport), (pip, pport) = local, peer
    return L7Request(protocol=proto, direction=direction, tgid=tgid, pid=tgid, fd=fd,
                     cgroup_id=0, local_ip=lip, local_port=lport, peer_ip=pip,
                     peer_port=pport, start_ns=0, duration_s=dur, method="GET",
                     status=status, error=error or status >= 500)


def host_map(**kw):
    clock = Clock()
    sm = ServiceMap(Identities(proctable=ProcessTable()), clock=clock, **kw)
    return sm, clock


def exe_name(pid):
    return "host/" + os.path.basename(os.readlink(f"/proc/{pid}/exe"))


def sleeper():
    return subprocess.Popen(["sleep", "30"])


def test_both_ends_on_this_node_count_once_from_the_server():
    client, server = os.getpid(), sleeper()
    try:
        sm, clock = host_map()
        c, s = ("127.0.0.1", 40000), ("127.0.0.1", 8080)
        for status in (200, 200, 404, 500):
            sm(rec(INBOUND, s, c, tgid=server.pid, status=status, dur=0.002))
            sm(rec(OUTBOUND, c, s, tgid=client, status=status, dur=0.003))
        clock.t += 5
        sm.flush()
        edge = ("", exe_name(client), "", exe_name(server.pid), HTTP)
        assert sm.requests == {edge + ("2xx",): 2, edge + ("4xx",): 1, edge + ("5xx",): 1}
        h = sm.durations[edge]
        assert h.count == 4 and math.isclose(h.sum, 0.008)      # the server's durations
        assert sm.duplicates == 4
    finally:
        server.kill()


def test_client_first_still_counts_once_and_the_client_keeps_its_name():
    client, server = os.getpid(), sleeper()
    try:
        sm, clock = host_map()
        c, s = ("127.0.0.1", 40001), ("127.0.0.1", 8080)
        sm(rec(OUTBOUND, c, s, tgid=client))        # client's record first (reordered)
        sm(rec(INBOUND, s, c, tgid=server.pid))
        sm(rec(OUTBOUND, c, s, tgid=client))
        sm(rec(INBOUND, s, c, tgid=server.pid))
        clock.t += 5
        sm.flush()
        assert sm.requests == {("", exe_name(client), "", exe_name(server.pid), HTTP, "2xx"): 2}
    finally:
        server.kill()


def test_client_only_names_the_server_from_its_ip_after_the_window():
    sm, clock = host_map()
    me = os.getpid()
    sm(rec(OUTBOUND, ("10.0.0.5", 41000), ("203.0.113.77", 443), tgid=me, status=503))
    assert sm.requests == {}                      # waits for the server's view
    clock.t += 1.5
    sm.flush()
    assert sm.requests == {}
    clock.t += 0.6
    sm.flush()
    edge = ("", exe_name(me), "", "203.0.113.0/24", HTTP)
    assert sm.requests == {edge + ("5xx",): 1}
    sm(rec(OUTBOUND, ("10.0.0.5", 41000), ("203.0.113.77", 443), tgid=me))   # settled: at once
    assert sm.requests == {edge + ("5xx",): 1, edge + ("2xx",): 1}


def test_server_only_names_a_loopback_client_host():
    sm, clock = host_map()
    me = os.getpid()
    sm(rec(INBOUND, ("127.0.0.1", 6379), ("127.0.0.1", 50000), tgid=me, proto=REDIS,
           status=0, error=True))
    clock.t += 3
    sm.flush()
    assert sm.requests == {("", "host", "", exe_name(me), REDIS, "error"): 1}


def test_a_server_seen_late_takes_over_without_counting_twice():
    server = sleeper()
    try:
        sm, clock = host_map()
        me = os.getpid()
        c, s = ("127.0.0.1", 40002), ("127.0.0.1", 8081)
        sm(rec(OUTBOUND, c, s, tgid=me))                  # exchange 1, client's view
        sm(rec(OUTBOUND, c, s, tgid=me, status=404))      # exchange 2
        clock.t += 3
        sm.flush()                                         # settled: client only
        sm(rec(INBOUND, s, c, tgid=server.pid))            # the server's 1 and 2, late
        sm(rec(INBOUND, s, c, tgid=server.pid, status=404))
        sm(rec(INBOUND, s, c, tgid=server.pid, status=500))  # exchange 3: the server's
        sm(rec(OUTBOUND, c, s, tgid=me, status=500))       # and the client's 3: dropped
        cl, sv = exe_name(me), exe_name(server.pid)
        assert sm.requests == {("", cl, "", "host", HTTP, "2xx"): 1,
                               ("", cl, "", "host", HTTP, "4xx"): 1,
                               ("", cl, "", sv, HTTP, "5xx"): 1}
        assert sm.duplicates == 3
    finally:
        server.kill()


def test_a_reused_client_port_is_a_new_connection():
    sm, clock = host_map()
    me = os.getpid()
    c = ("10.0.0.5", 42000)
    sm(rec(OUTBOUND, c, ("198.51.100.1", 80), tgid=me, fd=7))
    clock.t += 3
    sm.flush()
    sm(rec(OUTBOUND, c, ("192.0.2.9", 80), tgid=me, fd=7))
    clock.t += 3
    sm.flush()
    cl = exe_name(me)
    assert sm.requests == {("", cl, "", "198.51.100.0/24", HTTP, "2xx"): 1,
                           ("", cl, "", "192.0.2.0/24", HTTP, "2xx"): 1}


def test_edges_beyond_the_bound_fold_the_unobserved_end():
    sm, clock = host_map(max_edges=3)
    me = os.getpid()
    for i in range(6):
        sm(rec(OUTBOUND, ("10.0.0.5", 43000 + i), (f"198.51.{i}.1", 80), tgid=me))
    clock.t += 3
    sm.flush()
    cl = exe_name(me)
    assert sm.requests == {("", cl, "", "198.51.0.0/24", HTTP, "2xx"): 1,
                           ("", cl, "", "198.51.1.0/24", HTTP, "2xx"): 1,
                           ("", cl, "", "198.51.2.0/24", HTTP, "2xx"): 1,
                           ("", cl, "", "other", HTTP, "2xx"): 3}
    assert sm.folded == 3
    # a named edge keeps its series after the bound is reached
    sm(rec(OUTBOUND, ("10.0.0.5", 44000), ("198.51.1.9", 80), tgid=me))
    clock.t += 3
    sm.flush()
    assert sm.requests[("", cl, "", "198.51.1.0/24", HTTP, "2xx")] == 2


def test_scrape_families():
    sm, clock = host_map()
    me = os.getpid()
    sm(rec(OUTBOUND, ("10.0.0.5", 45000), ("198.51.100.1", 80), tgid=me, dur=0.3))
    fams = {f.name: f for f in sm.collect()}     # a scrape settles what the window passed
    assert fams["vigil_service_requests"].samples == []
    clock.t += 3
    fams = {f.name: f for f in sm.collect()}
    [s] = fams["vigil_service_requests"].samples
    assert s.labels["server_workload"] == "198.51.100.0/24" and s.value == 1
    assert s.labels["status_class"] == "2xx" and s.labels["protocol"] == "http"
    buckets = {x.labels["le"]: x.value for x in fams["vigil_service_request_duration_seconds"]
               .samples if x.name.endswith("_bucket")}
    assert buckets["0.25"] == 0 and buckets["0.5"] == 1 and buckets["+Inf"] == 1


def test_ip_folding():
    assert external_name(ip_of("203.0.113.200")) == "203.0.113.0/24"
    assert external_name(ip_of("::ffff:203.0.113.200")) == "203.0.113.0/24"
    assert external_name(ip_of("2001:db8:1:2::5")) == "2001:db8:1:2::/64"


def test_quantiles_as_histogram_quantile():
    h = Hist()
    for v in [0.001] * 50 + [0.2] * 49 + [3.0]:
        h.observe(v)
    cum = cumulative_of(h.to_list())
    assert quantile(0.5, cum) == 0.001               # 50th sample: top of the 1 ms bucket
    assert 0.1 < quantile(0.9, cum) <= 0.25
    assert 2.5 < quantile(0.999, cum) <= 5.0
    assert math.isnan(quantile(0.5, cumulative_of(Hist().to_list())))
    assert len(h.cumulative()) == len(DURATION_BUCKETS) + 1
    assert quantile(0.99, [(1.0, 0), (math.inf, 3)]) == 1.0     # only +Inf: its lower bound



def test_max_edges_setting(tmp_path):
    import pytest
    from vigil.config import ConfigError, load_config
    f = tmp_path / "vigil.yaml"
    f.write_text("metrics:\n  max_edges: 20\n")
    assert load_config(str(f))["metrics"]["max_edges"] == 20
    f.write_text("metrics:\n  address: 127.0.0.1:9476\n  max_edges: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert f"{f}:3" in str(e.value) and "max_edges" in str(e.value)


def test_services_rows_dot_and_table_from_two_scrapes():
    from prometheus_client import CollectorRegistry, generate_latest
    from rich.console import Console

    from vigil.cli.services import dot, edges, snapshot, table
    sm, clock = host_map()
    reg = CollectorRegistry()
    reg.register(sm)
    me = os.getpid()

    def traffic(port, n_ok, n_fail, dur):
        for i in range(n_ok + n_fail):
            sm(rec(OUTBOUND, ("10.0.0.5", port), ("203.0.113.7", 80), tgid=me,
                   status=200 if i < n_ok else 503, dur=dur))
        clock.t += 3
        sm.flush()

    traffic(46000, 5, 0, 0.002)
    first = snapshot(generate_latest(reg).decode())
    traffic(46000, 8, 2, 0.002)
    traffic(46001, 0, 0, 0)
    second = snapshot(generate_latest(reg).decode())
    [row] = edges(first, second, 10.0)
    assert (row["client"], row["server"], row["protocol"]) == (exe_name(me), "203.0.113.0/24",
                                                                "http")
    assert row["requests"] == 10 and row["status"] == {"2xx": 8, "5xx": 2}
    assert row["rate"] == 1.0 and row["error_ratio"] == 0.2
    assert 0.001 < row["p50_seconds"] <= 0.0025 and row["p99_seconds"] <= 0.0025
    g = dot([row], 10.0)
    assert f'"{exe_name(me)}" -> "203.0.113.0/24" [label="http 1.0/s err 20.0% p50 ' in g
    assert g.rstrip().endswith("}") and 'color="red"' in g
    c = Console(width=160, record=True)
    c.print(table([row], 10.0))
    text = c.export_text()
    assert "203.0.113.0/24" in text and "20.0" in text and " 10 " in text
