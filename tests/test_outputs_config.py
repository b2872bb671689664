"""Building the alert pipeline from the vigil.yaml sections."""
from __future__ import annotations

import io
import json

import pytest
import yaml

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import AlertPipeline
from vigil.alerts.outputs.config import (ConfigError, build_outputs, build_pipeline,
                                  build_rate_limiter, build_store, parse_duration, parse_size)
from vigil.alerts.outputs.file import FileOutput
from vigil.alerts.outputs.stdout import StdoutOutput
from vigil.alerts.outputs.syslog import SyslogOutput
from vigil.alerts.outputs.webhook import WebhookOutput
from vigil.alerts.store import AlertStore

NOW = 1_700_000_000_000_000_000

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


def mk(i=0):
    return Alert(time=NOW + i, rule="R", priority="warning", output=f"o{i}", hostname="h")


def test_parse_duration():
    assert parse_duration(30) == 30.0
    assert parse_duration(1.5) == 1.5
    assert parse_duration("2.5") == 2.5
    assert parse_duration("500ms") == 0.5
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("1H 5S") == 3605
    for bad in ("", "abc", "10x", "-5", -1, True, "5m garbage", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_parse_size():
    assert parse_size(104857600) == 104857600
    assert parse_size("512k") == 512000
    assert parse_size("100MiB") == 100 * 1024 * 1024
    assert parse_size("1 GB") == 10 ** 9
    assert parse_size("1.5KiB") == 1536
    for bad in ("", "ten", "5 parsecs", -1, True):
        with pytest.raises(ValueError):
            parse_size(bad)


EXAMPLE = """
outputs:
  stdout: {enabled: true, format: text}
  file: {enabled: true, path: %(dir)s/log/alerts.jsonl, max_bytes: 104857600, backups: 5}
  syslog: {enabled: false, address: /dev/log, facility: local0}
  webhook: {enabled: false, url: http://127.0.0.1:9/, headers: {}, timeout: 5, max_retries: 5,
            queue_size: 10000}
store: {enabled: true, path: %(dir)s/alerts.db, max_age: 7d, max_rows: 1000000}
rate_limit: {window: 1.0}
agent: {something: else}      # other sections are not ours and are ignored
"""


def test_example_config_builds_working_pipeline(tmp_path):
    cfg = yaml.safe_load(EXAMPLE % {"dir": tmp_path})
    buf = io.StringIO()
    p = build_pipeline(cfg, stream=buf)
    try:
        assert isinstance(p, AlertPipeline)
        outs = p.dispatcher.outputs
        assert [type(o) for o in outs] == [StdoutOutput, FileOutput]
        assert outs[0].format == "text"
        assert (outs[1].max_bytes, outs[1].backups) == (104857600, 5)
        st = p.store
        assert isinstance(st, AlertStore)
        assert (st.max_age_s, st.max_rows, st.max_bytes) == (7 * 86400, 1000000, None)
        assert p.limiter.window == 1.0
        p.emit(mk(0))
        p.emit(mk(0))
    finally:
        p.close(1)
    # the repeat was folded (count 1) and flushed at close
    assert buf.getvalue().splitlines() == [mk(0).text_line(), mk(0).text_line()]
    lines = (tmp_path / "log" / "alerts.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first.pop("uuid")                     # every alert has its stable id
    assert first == mk(0).to_falco_json()
    assert len(lines) == 2                       # the folded repeat was flushed at close
    ro = AlertStore(str(tmp_path / "alerts.db"), readonly=True)
    try:
        assert [r["count"] for r in ro.query()] == [1, 1]
    finally:
        ro.close()


def test_defaults(tmp_path):
    outs = build_outputs(None)
    assert [type(o) for o in outs] == [StdoutOutput]
    assert build_outputs({"stdout": False}) == []
    assert build_rate_limiter(None).window == 1.0
    assert build_rate_limiter({"window": 0}) is None
    assert build_rate_limiter({"window": "250ms"}).window == 0.25
    assert build_store({"enabled": False}) is None
    assert build_store(False) is None
    s = build_store({"path": str(tmp_path / "x.db")})
    try:
        assert (s.max_age_s, s.max_rows) == (7 * 86400, 1_000_000)
    finally:
        s.close()


def test_all_outputs_enabled(tmp_path):
    cfg = {"stdout": {"format": "json"},
           "file": {"path": str(tmp_path / "a.jsonl"), "max_bytes": "1MiB", "backups": 2,
                    "fsync": True},
           "syslog": {"address": "127.0.0.1:5514", "facility": "LOCAL3", "format": "json"},
           "webhook": {"url": "http://127.0.0.1:9/x", "headers": {"X-Token": "t"},
                       "timeout": 2, "max_retries": 1, "backoff": 0.1, "max_backoff": 1,
                       "queue_size": 5, "verify": False}}
    outs = build_outputs(cfg)
    try:
        assert [type(o) for o in outs] == [StdoutOutput, FileOutput, SyslogOutput, WebhookOutput]
        assert outs[1].max_bytes == 1024 * 1024 and outs[1].fsync
        assert outs[2].address == ("127.0.0.1", 5514)
        wh = outs[3]
        assert (wh.url, wh.timeout, wh.max_retries, wh.queue_size) == (
            "http://127.0.0.1:9/x", 2.0, 1, 5)
    finally:
        for o in outs:
            o.close(0)


@pytest.mark.parametrize("cfg, message", [
    ({"outputs": {"stdout": {"format": "xml"}}}, "outputs.stdout.format"),
    ({"outputs": {"stdout": {"fromat": "text"}}}, "outputs.stdout: unknown key 'fromat'"),
    ({"outputs": {"kafka": {}}}, "outputs: unknown output 'kafka'"),
    ({"outputs": {"file": {"backups": -1}}}, "outputs.file.backups"),
    ({"outputs": {"file": {"max_bytes": "lots"}}}, "outputs.file.max_bytes"),
    ({"outputs": {"file": {"fsync": "yes"}}}, "outputs.file.fsync"),
    ({"outputs": {"syslog": {"facility": "local9"}}}, "outputs.syslog.facility"),
    ({"outputs": {"syslog": {"address": "host:99999"}}}, "outputs.syslog.address"),
    ({"outputs": {"webhook": {"enabled": True}}}, "outputs.webhook.url"),
    ({"outputs": {"webhook": {"url": "ftp://x"}}}, "outputs.webhook.url"),
    ({"outputs": {"webhook": {"url": "http://x", "timeout": 0}}}, "outputs.webhook.timeout"),
    ({"outputs": {"webhook": {"url": "http://x", "timeout": "5"}}}, "outputs.webhook.timeout"),
    ({"outputs": {"webhook": {"url": "http://x", "queue_size": 0}}},
     "outputs.webhook.queue_size"),
    ({"outputs": {"webhook": {"url": "http://x", "headers": ["a"]}}},
     "outputs.webhook.headers"),
    ({"outputs": {"webhook": {"url": "http://x", "enabled": "true"}}},
     "outputs.webhook.enabled"),
    ({"outputs": ["stdout"]}, "outputs: expected a mapping"),
    ({"store": {"max_age": "forever"}}, "store.max_age"),
    ({"store": {"max_rows": 0}}, "store.max_rows"),
    ({"store": {"synchronous": "sometimes"}}, "store.synchronous"),
    ({"store": {"pth": "/x"}}, "store: unknown key 'pth'"),
    ({"rate_limit": {"window": "soon"}}, "rate_limit.window"),
    ({"rate_limit": {"window": -1}}, "rate_limit.window"),
])
def test_config_errors_name_key(cfg, message, tmp_path):
    cfg.setdefault("store", {})
    if isinstance(cfg["store"], dict):
        cfg["store"].setdefault("path", str(tmp_path / "a.db"))
    with pytest.raises(ConfigError) as ei:
        build_pipeline(cfg, stream=io.StringIO())
    assert message in str(ei.value)


def test_bad_value_is_quoted_in_message():
    with pytest.raises(ConfigError, match=r"outputs.stdout.format: .*got 'xml'"):
        build_outputs({"stdout": {"format": "xml"}})


def test_failure_after_webhook_built_closes_it(tmp_path):
    # webhook thread starts, then the store fails: no thread may be left behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = {"outputs": {"stdout": False, "webhook": {"url": "http://127.0.0.1:9/"}},
           "store": {"path": str(blocker / "sub" / "alerts.db")}}
    with pytest.raises(ConfigError, match="store.path"):
        build_pipeline(cfg)


def test_unopenable_file_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="outputs.file.path"):
        build_outputs({"stdout": False, "file": {"path": str(blocker / "a.jsonl")}})
