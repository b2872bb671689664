"""Syslog output against real UDP and unix-datagram listeners."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import OutputDispatcher
from vigil.alerts.outputs.syslog import SEVERITY, SyslogOutput, parse_address

NOW = 1_700_000_000_000_000_000
LOCAL0 = 16


def mk(priority="critical", output="Outbound connection to C2 server (ip=203.0.113.9)"):
    return Alert(time=NOW, rule="C2 connection", priority=priority, output=output,
                 output_fields={"fd.sip": "203.0.113.9"}, tags=["network"], hostname="n1")


@pytest.fixture
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def recv(sock):
    data, _ = sock.recvfrom(65536)
    return data.decode("utf-8")


def test_udp_text_with_priority_mapping(udp):
    port = udp.getsockname()[1]
    out = SyslogOutput(address=f"127.0.0.1:{port}", facility="local0")
    try:
        expected_sev = {"emergency": 0, "alert": 1, "critical": 2, "error": 3, "warning": 4,
                        "notice": 5, "informational": 6, "debug": 7}
        for prio, sev in expected_sev.items():
            a = mk(priority=prio)
            assert out.emit(a) is True
            msg = recv(udp)
            assert msg == f"<{LOCAL0 * 8 + sev}>vigil[{os.getpid()}]: {a.text_line()}"
        assert out.stats() == {"sent": 8, "failed": 0}
    finally:
        out.close()


def test_udp_json_and_other_facility(udp):
    port = udp.getsockname()[1]
    out = SyslogOutput(address=f"udp://127.0.0.1:{port}", facility="auth", format="json",
                       ident="vigil: ")
    try:
        out.emit(mk(priority="warning"))
        msg = recv(udp)
        prefix = f"<{4 * 8 + 4}>vigil: "
        assert msg.startswith(prefix)
        assert json.loads(msg[len(prefix):]) == mk(priority="warning").to_falco_json()
    finally:
        out.close()


def test_long_message_truncated_and_newlines_flattened(udp):
    port = udp.getsockname()[1]
    out = SyslogOutput(address=("127.0.0.1", port), max_message_bytes=100)
    try:
        out.emit(mk(output="line1\nline2 " + "é" * 200))
        msg = recv(udp)
        body = msg.split(": ", 1)[1]
        assert "\n" not in msg
        assert len(body.encode("utf-8")) <= 100
    finally:
        out.close()


def test_unix_datagram_socket(tmp_path):
    path = str(tmp_path / "log.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    out = SyslogOutput(address=path, facility="local7")
    try:
        out.emit(mk(priority="error"))
        assert srv.recv(65536).decode() == (
            f"<{23 * 8 + 3}>vigil[{os.getpid()}]: {mk(priority='error').text_line()}")
    finally:
        out.close()
        srv.close()


def test_missing_unix_socket_fails_counted_then_recovers(tmp_path):
    path = str(tmp_path / "later.sock")
    out = SyslogOutput(address=path)           # no daemon yet: not an error at start
    d = OutputDispatcher([out])
    try:
        d.emit(mk())
        s = d.stats()["outputs"]["syslog"]
        assert s["failed"] == 1 and s["details"]["failed"] == 1
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(path)
        srv.settimeout(5)
        try:
            d.emit(mk())
            assert srv.recv(65536).decode().endswith(mk().text_line())
        finally:
            srv.close()
        assert d.stats()["outputs"]["syslog"]["sent"] == 1
    finally:
        d.close()


def test_direct_emit_raises_on_failure(tmp_path):
    out = SyslogOutput(address=str(tmp_path / "none.sock"))
    try:
        with pytest.raises(OSError, match="syslog send"):
            out.emit(mk())
    finally:
        out.close()


def test_parse_address_and_validation():
    assert parse_address("/dev/log") == ("/dev/log", None)
    assert parse_address("10.0.0.1:5514") == (("10.0.0.1", 5514), socket.SOCK_DGRAM)
    assert parse_address("tcp://logs:601") == (("logs", 601), socket.SOCK_STREAM)
    assert parse_address("[::1]:514") == (("::1", 514), socket.SOCK_DGRAM)
    assert parse_address("loghost") == (("loghost", 514), socket.SOCK_DGRAM)
    for bad in ("", "host:0", "host:abc", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
    with pytest.raises(ValueError, match="facility"):
        SyslogOutput(address="127.0.0.1:514", facility="local9")
    with pytest.raises(ValueError, match="format"):
        SyslogOutput(address="127.0.0.1:514", format="xml")
    assert set(SEVERITY.values()) == {"emerg", "alert", "crit", "err", "warning", "notice",
                                      "info", "debug"}


def test_tcp_lf_framing_and_reconnect_after_server_restart():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(5)
    port = srv.getsockname()[1]
    out = SyslogOutput(address=f"tcp://127.0.0.1:{port}", ident="vigil: ")
    try:
        out.emit(mk(priority="notice", output="one"))
        out.emit(mk(priority="notice", output="two"))
        conn, _ = srv.accept()
        conn.settimeout(5)
        data = b""
        while data.count(b"\n") < 2:
            data += conn.recv(4096)
        pri = f"<{LOCAL0 * 8 + 5}>vigil: "
        assert data.decode().split("\n")[:2] == [pri + mk("notice", "one").text_line(),
                                                 pri + mk("notice", "two").text_line()]
        conn.close()                          # the server goes away ...
        failures = 0
        for _ in range(50):                   # ... sends fail (counted) until a socket error
            try:
                out.emit(mk(output="lost?"))
            except OSError:
                failures += 1
                break
            time.sleep(0.02)
        assert failures == 1
        out.emit(mk(priority="notice", output="three"))   # new connection
        conn2, _ = srv.accept()
        conn2.settimeout(5)
        data = b""
        while b"three" not in data:
            data += conn2.recv(4096)
        conn2.close()
    finally:
        out.close()
        srv.close()
