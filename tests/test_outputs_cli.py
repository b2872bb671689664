"""`vigil alerts` over a real store, via CliRunner and via the installed script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vigil.alerts.alert import Alert
from vigil.cli.main import main
from vigil.cli.alerts import parse_since
from vigil.alerts.store import AlertStore

VIGIL = str(Path(sys.executable).parent / "vigil")
T0 = 1_700_000_000_000_000_000          # 2023-11-14T22:13:20Z


def mk(t, rule, priority, cid, cname, output, count=1):
    return Alert(time=t, rule=rule, priority=priority, output=output,
                 output_fields={"container.id": cid, "container.name": cname,
                                "k8s.ns.name": "default", "k8s.pod.name": "p"},
                 tags=["t1"], hostname="node-a", count=count)


@pytest.fixture
def store_path(tmp_path):
    now = time.time_ns()
    p = str(tmp_path / "alerts.db")
    s = AlertStore(p)
    s.add(mk(T0, "Old rule", "critical", "aaaa00000001", "legacy", "ancient alert"))
    s.add(mk(now - 2 * 3600 * 10**9, "Write below etc", "error", "bbbb00000002", "web",
             "File below /etc opened (file=/etc/passwd)"))
    s.add(mk(now - 5 * 60 * 10**9, "Terminal shell in container", "notice", "cccc00000003",
             "api", "A shell was spawned (shell=bash)", count=3))
    s.add(mk(now - 60 * 10**9, "Outbound C2", "critical", "host", "host",
             "Connection to 203.0.113.9"))
    s.close()
    return p


def run(*args):
    r = CliRunner().invoke(main, ["alerts", *args], catch_exceptions=False)
    return r


def test_table_default(store_path):
    r = run("--store", store_path)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "PRIORITY", "RULE", "CONTAINER", "OUTPUT"]
    assert len(lines) == 5
    # newest first
    assert "Outbound C2" in lines[1] and "host" in lines[1] and "Critical" in lines[1]
    assert "api" in lines[2] and "A shell was spawned (shell=bash) (x3)" in lines[2]
    assert "2023-11-14 22:13:20" in lines[4] and "legacy" in lines[4]
    # columns line up
    assert len({ln.index("Critical") for ln in (lines[1], lines[4])}) == 1


def test_json_output_is_falco_json(store_path):
    r = run("--store", store_path, "--json", "--container", "aaaa")
    assert r.exit_code == 0
    (line,) = r.output.splitlines()
    assert json.loads(line) == {
        "hostname": "node-a",
        "output": "2023-11-14T22:13:20.000000000Z: Critical ancient alert",
        "output_fields": {"evt.time": 1_700_000_000_000_000_000, "container.id": "aaaa00000001",
                          "container.name": "legacy", "k8s.ns.name": "default",
                          "k8s.pod.name": "p"},
        "priority": "Critical",
        "rule": "Old rule",
        "source": "syscall",
        "tags": ["t1"],
        "time": "2023-11-14T22:13:20.000000000Z",
    }
    r = run("--store", store_path, "--json", "--rule", "Terminal shell in container")
    (line,) = r.output.splitlines()
    assert json.loads(line)["output_fields"]["vigil.repeat_count"] == 3


def rules_of(output):
    return [json.loads(ln)["rule"] for ln in output.splitlines()]


def test_filters(store_path):
    assert rules_of(run("--store", store_path, "--json", "--since", "10m").output) == [
        "Outbound C2", "Terminal shell in container"]
    assert rules_of(run("--store", store_path, "--json", "--since", "1d").output) == [
        "Outbound C2", "Terminal shell in container", "Write below etc"]
    assert rules_of(run("--store", store_path, "--json", "--since",
                        "2023-11-14T22:13:20Z").output)[-1] == "Old rule"
    assert "Old rule" not in rules_of(run("--store", store_path, "--json", "--since",
                                          "2023-11-15").output)
    assert rules_of(run("--store", store_path, "--json", "--priority", "critical").output) == [
        "Outbound C2", "Old rule"]
    assert rules_of(run("--store", store_path, "--json", "--priority", "error").output) == [
        "Outbound C2", "Write below etc", "Old rule"]
    assert rules_of(run("--store", store_path, "--json", "--container", "web").output) == [
        "Write below etc"]
    assert rules_of(run("--store", store_path, "--json", "--container", "cccc0").output) == [
        "Terminal shell in container"]
    assert rules_of(run("--store", store_path, "--json", "--limit", "2").output) == [
        "Outbound C2", "Terminal shell in container"]
    assert len(rules_of(run("--store", store_path, "--json", "--limit", "0").output)) == 4


def test_no_match_says_so_on_stderr(store_path):
    r = CliRunner().invoke(main, ["alerts", "--store", store_path, "--rule", "nope"])
    assert r.exit_code == 0
    assert r.stdout == ""
    assert r.stderr.strip() == "no alerts"


def test_missing_store_is_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["alerts", "--store", str(tmp_path / "none.db")])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1
    assert r.output.startswith("Error: alert store ") and "does not exist" in r.output


@pytest.mark.parametrize("args, text", [
    (["--since", "yesterday"], "--since"),
    (["--priority", "loud"], "--priority"),
])
def test_bad_arguments(store_path, args, text):
    r = CliRunner().invoke(main, ["alerts", "--store", store_path, *args])
    assert r.exit_code == 2
    assert text in r.output


def test_parse_since():
    now = 2_000_000_000 * 10**9
    assert parse_since("10m", now) == now - 600 * 10**9
    assert parse_since("2d", now) == now - 2 * 86400 * 10**9
    assert parse_since("2023-11-14T22:13:20Z", now) == T0
    assert parse_since("2023-11-14T23:13:20+01:00", now) == T0
    assert parse_since("2023-11-14 22:13:20.5", now) == T0 + 500_000_000
    with pytest.raises(ValueError):
        parse_since("soonish", now)


def test_installed_script_reads_store_while_writer_is_open(store_path):
    writer = AlertStore(store_path)          # the agent still has it open, WAL in use
    try:
        writer.add(mk(time.time_ns(), "Fresh", "warning", "dddd", "new", "just now"))
        env = dict(os.environ)
        r = subprocess.run([VIGIL, "alerts", "--store", store_path, "--json", "--limit", "1"],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rule"] == "Fresh"
        r = subprocess.run([VIGIL, "alerts", "--store", store_path], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 6
    finally:
        writer.close()


def test_installed_script_missing_store(tmp_path):
    r = subprocess.run([VIGIL, "alerts", "--store", str(tmp_path / "x.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "does not exist" in r.stderr


def test_help_lists_command():
    r = CliRunner().invoke(main, ["--help"])
    assert "alerts" in r.output
