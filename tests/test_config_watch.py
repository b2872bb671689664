"""Hot reload without signals: the rules and config files are watched (inotify on
their directories) and a change is reloaded as SIGHUP would be.  The volumes are
laid out as the kubelet lays out a ConfigMap (files are symlinks through the
``..data`` symlink, an update renames a new ``..data`` over the old one)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import AgentProc, require_kernel, rule, wait_until, write_config  # noqa: E402

from vigil.config.watch import RULE_RELOAD_FAILED, ConfigWatcher, fingerprint  # noqa: E402


class ConfigMapVolume:
    """A directory kept as the kubelet keeps a ConfigMap volume."""

    def __init__(self, path: Path, files: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True)
        self.generation = 0
        self.update(files)
        for name in files:
            os.symlink(f"..data/{name}", self.path / name)

    def update(self, files: dict) -> None:
        self.generation += 1
        new = self.path / f"..2024_01_01_00_00_{self.generation:02d}.{os.getpid()}"
        new.mkdir()
        for name, text in files.items():
            (new / name).write_text(text)
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        os.symlink(new.name, self.path / "..data_tmp")
        os.rename(self.path / "..data_tmp", self.path / "..data")
        if old:
            shutil.rmtree(self.path / old)


def rules_yaml(rules: list) -> str:
    return yaml.safe_dump(rules, sort_keys=False)


def test_watcher_sees_a_data_swap_and_ignores_same_content(tmp_path):
    vol = ConfigMapVolume(tmp_path / "rules", {"r.yaml": "a: 1\n"})
    calls = []
    w = ConfigWatcher(lambda: [str(vol.path)], lambda: calls.append(time.monotonic()),
                      settle=0.1).start()
    try:
        before = fingerprint([str(vol.path)])
        vol.update({"r.yaml": "a: 2\n"})
        wait_until(lambda: calls, 3, what="a reload request after the ..data swap")
        assert fingerprint([str(vol.path)]) != before
        vol.update({"r.yaml": "a: 2\n"})          # a resync with the same content
        os.utime(vol.path / "r.yaml")
        time.sleep(1.0)
        assert len(calls) == 1
        # a plain file, replaced by rename (as editors do), is seen too
        plain = tmp_path / "vigil.yaml"
        plain.write_text("x: 1\n")
        w2 = ConfigWatcher(lambda: [str(plain)], lambda: calls.append(0), settle=0.1).start()
        try:
            (tmp_path / "vigil.yaml.new").write_text("x: 2\n")
            os.rename(tmp_path / "vigil.yaml.new", plain)
            wait_until(lambda: len(calls) == 2, 3, what="a reload request after a rename")
        finally:
            w2.stop()
    finally:
        w.stop()
    assert not [t for t in threading.enumerate() if t.name == "vigil-config-watch"]


def _open(path) -> int:
    p = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
    p.wait()
    return p.pid


def _fires(agent, name, pid, timeout=5.0):
    return agent.wait_alerts(name, timeout=timeout,
                             pred=lambda a: a["output_fields"].get("proc.pid") == pid)


def _rule(d, name):
    return rule(f"Watch {name}", f"evt.type in (open, openat) and fd.name startswith {d}/{name}-",
                f"{name} (file=%fd.name pid=%proc.pid)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("watch")
    rules = ConfigMapVolume(d / "rules", {"rules.yaml": rules_yaml([_rule(d, "a")])})
    conf = {"rules": [str(rules.path)], "rate_limit": {"window": 0},
            "store": {"enabled": False}, "outputs": {"stdout": {"format": "json"}}}
    config = ConfigMapVolume(d / "config", {"vigil.yaml": yaml.safe_dump(conf)})
    for n in ("a-1", "b-1", "c-1"):
        (d / n).write_text("x")
    a = AgentProc(["run", "-c", config.path / "vigil.yaml", "-v"], d, ready="vigil: running with")
    a.dir, a.rules_vol, a.config_vol, a.conf = d, rules, config, conf
    yield a
    a.kill()


def test_data_swap_with_a_new_rule_fires_without_a_signal(agent):
    d = agent.dir
    _fires(agent, "Watch a", _open(d / "a-1"))
    mark = len(agent.stderr())
    agent.rules_vol.update({"rules.yaml": rules_yaml([_rule(d, "a"), _rule(d, "b")])})
    agent.wait_stderr("rules reloaded: 2 rules", start=mark)
    _fires(agent, "Watch b", _open(d / "b-1"))
    _fires(agent, "Watch a", _open(d / "a-1"))


def test_broken_rules_are_rejected_old_rules_fire_and_an_alert_says_so(agent):
    d = agent.dir
    good = rules_yaml([_rule(d, "a"), _rule(d, "b")])
    broken = good + ("- rule: Broken\n  desc: broken\n"
                     "  condition: evt.type = open and proc.nosuchfield = 1\n"
                     "  output: broken\n  priority: WARNING\n")
    bad_line = broken.splitlines().index(
        "  condition: evt.type = open and proc.nosuchfield = 1") + 1
    agent.rules_vol.update({"rules.yaml": broken + rules_yaml([_rule(d, "c")])})
    (alert,) = agent.wait_alerts(RULE_RELOAD_FAILED)
    assert alert["priority"] == "Error" and alert["source"] == "internal"
    assert alert["output_fields"]["vigil.reload"] == "rules"
    # the rules file as the agent reads it (through the ConfigMap's symlinks), with its line
    assert f"{agent.rules_vol.path}/rules.yaml:{bad_line}:" in alert["output_fields"]["vigil.error"]
    assert "proc.nosuchfield" in alert["output"]
    assert agent.proc.poll() is None
    _fires(agent, "Watch a", _open(d / "a-1"))
    _fires(agent, "Watch b", _open(d / "b-1"))
    _open(d / "c-1")
    time.sleep(0.5)
    assert not agent.alerts("Watch c")        # the broken set never ran


def test_broken_config_is_rejected_and_a_fixed_one_applies(agent):
    d = agent.dir
    bad = dict(agent.conf, min_priority="loud")
    agent.config_vol.update({"vigil.yaml": yaml.safe_dump(bad)})
    alerts = agent.wait_alerts(RULE_RELOAD_FAILED, count=2)
    last = alerts[-1]["output_fields"]
    assert last["vigil.reload"] == "configuration"
    assert "min_priority" in last["vigil.error"] and "loud" in last["vigil.error"]
    _fires(agent, "Watch a", _open(d / "a-1"))
    # a good configuration naming one more rules file is applied (and that file watched)
    extra = d / "extra.yaml"
    extra.write_text(rules_yaml([_rule(d, "c")]))
    agent.rules_vol.update({"rules.yaml": rules_yaml([_rule(d, "a"), _rule(d, "b")])})
    mark = len(agent.stderr())
    agent.config_vol.update({"vigil.yaml": yaml.safe_dump(
        dict(agent.conf, rules=[str(agent.rules_vol.path), str(extra)]))})
    agent.wait_stderr("rules reloaded: 3 rules", start=mark)
    _fires(agent, "Watch c", _open(d / "c-1"))
    mark = len(agent.stderr())
    extra.write_text(rules_yaml([]))
    agent.wait_stderr("rules reloaded: 2 rules", start=mark)


def test_sighup_still_reloads_and_stats_count(agent):
    import signal
    mark = len(agent.stderr())
    agent.send(signal.SIGHUP)
    agent.wait_stderr("rules reloaded: 2 rules", start=mark)
    assert agent.stop(signal.SIGTERM) == 0
    err = agent.stderr()
    assert '"reload_errors": 2' in err and '"watch": {"changes": ' in err
    assert "Traceback" not in err
