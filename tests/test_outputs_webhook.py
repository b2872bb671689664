"""Webhook output against real HTTP receivers on 127.0.0.1."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from vigil import __version__
from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import OutputDispatcher
from vigil.alerts.outputs.webhook import WebhookOutput
from vigil.alerts.store import AlertStore

NOW = 1_700_000_000_000_000_042

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


def mk(i=0, priority="critical"):
    return Alert(time=NOW + i, rule="Terminal shell in container", priority=priority,
                 output=f"A shell was spawned in a container (user=root shell=bash n={i})",
                 output_fields={"container.id": "3f4a5b6c7d8e", "proc.name": "bash",
                                "user.name": "root", "n": i},
                 tags=["container", "shell", "mitre_execution"], source="syscall",
                 hostname="worker-3")


class Receiver:
    """A real HTTP server in a thread.  ``statuses`` are answered in order, then 200."""

    def __init__(self, statuses=(), activate=True, hold: threading.Event = None,
                 on_request=None, extra_headers=None):
        self.requests = []
        self.statuses = list(statuses)
        self.hold = hold
        self.on_request = on_request
        self.extra_headers = extra_headers or {}
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # one request per connection and a read timeout: the single-threaded
            # server can never be stuck on an idle keep-alive connection
            protocol_version = "HTTP/1.0"
            timeout = 5

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.on_request:
                    outer.on_request(body)
                if outer.hold is not None:
                    with outer.arrived:
                        outer.requests.append((self.path, dict(self.headers), body, "held"))
                        outer.arrived.notify_all()
                    outer.hold.wait(10)
                status = outer.statuses.pop(0) if outer.statuses else 200
                with outer.arrived:
                    if outer.hold is None:
                        outer.requests.append((self.path, dict(self.headers), body, status))
                    outer.arrived.notify_all()
                self.send_response(status)
                for k, v in outer.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()          # port reserved; refuses connections until listen()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.thread = None
        if activate:
            self.start()

    def start(self):
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_for(self, n, timeout=10.0):
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.requests) >= n, timeout)
        assert ok, f"only {len(self.requests)} of {n} requests arrived"
        return self.requests

    def stop(self):
        if self.hold is not None:
            self.hold.set()
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def wait_stats(out, key, value, timeout=10.0):
    deadline = time.monotonic() + timeout
    while out.stats()[key] < value:
        assert time.monotonic() < deadline, f"{key} never reached {value}: {out.stats()}"
        time.sleep(0.01)


def test_posts_falco_json_payload_with_headers(receivers):
    r = receivers()
    out = WebhookOutput(r.url, headers={"Authorization": "Bearer s3cret", "X-Cluster": "prod"})
    try:
        assert out.emit(mk()) is True
        (path, headers, body, status), = r.wait_for(1)
        wait_stats(out, "sent", 1)
    finally:
        out.close(5)
    assert path == "/alerts"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Cluster"] == "prod"
    assert headers["User-Agent"] == f"vigil/{__version__}"
    assert json.loads(body) == {
        "output": "2023-11-14T22:13:20.000000042Z: Critical A shell was spawned in a "
                  "container (user=root shell=bash n=0)",
        "priority": "Critical",
        "rule": "Terminal shell in container",
        "time": "2023-11-14T22:13:20.000000042Z",
        "output_fields": {"evt.time": NOW, "container.id": "3f4a5b6c7d8e", "proc.name": "bash",
                          "user.name": "root", "n": 0},
        "source": "syscall",
        "tags": ["container", "shell", "mitre_execution"],
        "hostname": "worker-3",
    }
    assert out.stats() == {"sent": 1, "retried": 0, "failed": 0, "dropped": 0, "queued": 0}
    assert not out.alive


def test_500_then_200_is_retried(receivers):
    r = receivers(statuses=[500])
    out = WebhookOutput(r.url, backoff=0.05)
    try:
        out.emit(mk())
        reqs = r.wait_for(2)
        wait_stats(out, "sent", 1)
    finally:
        out.close(5)
    assert [q[3] for q in reqs] == [500, 200]
    assert reqs[0][2] == reqs[1][2]
    assert json.loads(reqs[1][2])["rule"] == "Terminal shell in container"
    s = out.stats()
    assert (s["sent"], s["retried"], s["failed"], s["dropped"]) == (1, 1, 0, 0)


def test_receiver_that_starts_late(receivers):
    r = receivers(activate=False)        # port bound but not listening: connection refused
    out = WebhookOutput(r.url, backoff=0.05, max_backoff=0.2, max_retries=50)
    try:
        out.emit(mk(1))
        wait_stats(out, "retried", 2)    # it really failed to connect first
        assert r.requests == []
        r.start()
        (path, headers, body, status), = r.wait_for(1)
        wait_stats(out, "sent", 1)
    finally:
        out.close(5)
    assert json.loads(body) == mk(1).to_falco_json()
    s = out.stats()
    assert s["sent"] == 1 and s["failed"] == 0 and s["retried"] >= 2


def test_429_honours_retry_after_within_cap(receivers):
    r = receivers(statuses=[429], extra_headers={"Retry-After": "0.3"})
    out = WebhookOutput(r.url, backoff=0.01, max_backoff=1.0)
    t0 = time.monotonic()
    try:
        out.emit(mk())
        r.wait_for(2)
        wait_stats(out, "sent", 1)
        assert time.monotonic() - t0 >= 0.3
    finally:
        out.close(5)
    assert out.stats()["retried"] == 1


def test_4xx_is_not_retried(receivers):
    r = receivers(statuses=[400])
    out = WebhookOutput(r.url, backoff=0.01)
    try:
        out.emit(mk())
        r.wait_for(1)
        wait_stats(out, "failed", 1)
    finally:
        out.close(5)
    assert len(r.requests) == 1
    assert out.stats()["retried"] == 0 and out.stats()["sent"] == 0


def test_gives_up_after_max_retries(receivers):
    r = receivers(statuses=[503] * 10)
    out = WebhookOutput(r.url, backoff=0.01, max_backoff=0.02, max_retries=3)
    try:
        out.emit(mk())
        wait_stats(out, "failed", 1)
    finally:
        out.close(5)
    assert len(r.requests) == 4
    s = out.stats()
    assert (s["sent"], s["retried"], s["failed"]) == (0, 3, 1)


def test_full_queue_drops_and_never_blocks(receivers):
    hold = threading.Event()
    r = receivers(hold=hold)
    out = WebhookOutput(r.url, queue_size=2)
    try:
        assert out.emit(mk(0)) is True
        r.wait_for(1)                          # worker is stuck inside the first POST
        t0 = time.monotonic()
        results = [out.emit(mk(i)) for i in range(1, 6)]
        assert time.monotonic() - t0 < 0.5
        assert results == [True, True, False, False, False]
        assert out.stats()["dropped"] == 3
        hold.set()
        wait_stats(out, "sent", 3)
    finally:
        out.close(5)
    assert sorted(json.loads(q[2])["output_fields"]["n"] for q in r.requests) == [0, 1, 2]
    s = out.stats()
    assert (s["sent"], s["dropped"], s["failed"]) == (3, 3, 0)


def test_close_drains_queue(receivers):
    r = receivers()
    out = WebhookOutput(r.url)
    for i in range(50):
        out.emit(mk(i))
    out.close(10)
    assert not out.alive
    assert out.stats()["sent"] == 50
    assert [json.loads(q[2])["output_fields"]["n"] for q in r.requests] == list(range(50))
    assert out.emit(mk(99)) is False            # closed: refused and counted
    assert out.stats()["dropped"] == 1


def test_close_gives_up_at_deadline_when_unreachable(receivers):
    r = receivers(activate=False)               # never listens
    out = WebhookOutput(r.url, backoff=5, max_backoff=5, max_retries=100, timeout=1)
    for i in range(5):
        out.emit(mk(i))
    time.sleep(0.1)
    t0 = time.monotonic()
    out.close(0.5)
    assert time.monotonic() - t0 < 3
    assert not out.alive
    s = out.stats()
    assert s["sent"] == 0
    assert s["failed"] + s["dropped"] == 5


def test_store_is_written_before_the_webhook_sees_the_alert(receivers, tmp_path):
    path = str(tmp_path / "alerts.db")
    seen_in_store = []

    def check(body):
        n = json.loads(body)["output_fields"]["n"]
        ro = AlertStore(path, readonly=True)
        try:
            seen_in_store.append(any(row["output_fields"]["n"] == n for row in ro.query()))
        finally:
            ro.close()

    r = receivers(on_request=check)
    d = OutputDispatcher([WebhookOutput(r.url)], store=AlertStore(path))
    try:
        for i in range(3):
            d.emit(mk(i))
        r.wait_for(3)
    finally:
        d.close(5)
    assert seen_in_store == [True, True, True]
    assert d.stats()["outputs"]["webhook"]["sent"] == 3


def test_bad_arguments():
    with pytest.raises(ValueError):
        WebhookOutput("ftp://x")
    with pytest.raises(ValueError):
        WebhookOutput("http://x", queue_size=0)
    with pytest.raises(ValueError):
        WebhookOutput("http://x", max_retries=-1)
