"""vigil.yaml: the shipped example documents every key and loads; mistakes are
ConfigError naming file:line and key; random YAML never raises anything else
(neither from load_config nor from building the alert pipeline)."""
from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.config import DEFAULTS, SECTIONS, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "vigil.yaml"

# every key the agent reads, section by section (outputs/store/rate_limit are
# checked by vigil.outputs.config)
OUTPUT_KEYS = {
    "stdout": {"enabled", "format"},
    "file": {"enabled", "path", "max_bytes", "backups", "fsync", "file_mode", "group"},
    "syslog": {"enabled", "address", "facility", "format"},
    "webhook": {"enabled", "url", "headers", "timeout", "max_retries", "backoff", "max_backoff",
                "queue_size", "verify"},
}
STORE_KEYS = {"enabled", "path", "max_age", "max_rows", "max_bytes", "synchronous", "file_mode",
              "group"}
RATE_KEYS = {"window", "max_keys"}

SETTINGS = settings(max_examples=int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "200")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- the example -------------------------------------------------------------------

def test_example_documents_every_key():
    data = yaml.safe_load(EXAMPLE.read_text())
    assert set(data) == set(DEFAULTS)
    for sec, keys in SECTIONS.items():
        assert set(data[sec]) == keys, sec
    assert set(data["scope"]["namespaces"]) == {"include", "exclude"}
    assert set(data["outputs"]) == set(OUTPUT_KEYS)
    for name, keys in OUTPUT_KEYS.items():
        assert set(data["outputs"][name]) == keys, name
    assert set(data["store"]) == STORE_KEYS
    assert set(data["rate_limit"]) == RATE_KEYS
    # each key has a comment (on its line or just above it)
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*([a-z_]+):", line)
        if m:
            above = lines[i - 1].strip() if i else ""
            assert "#" in line or above.startswith("#"), f"undocumented key at line {i + 1}: {line}"


def test_example_loads_and_builds(tmp_path):
    cfg = load_config(str(EXAMPLE))
    assert cfg.path == str(EXAMPLE)
    # the defaults it spells out are the real defaults
    for k in ("min_priority", "rule_matching"):
        assert cfg[k] == DEFAULTS[k]
    assert cfg["sensors"]["ringbuf_size"] == DEFAULTS["sensors"]["ringbuf_size"]
    assert cfg["containers"] == DEFAULTS["containers"]
    # every output enabled, paths redirected: the values it documents are valid
    over = {
        "outputs": {"file": {"enabled": True, "path": str(tmp_path / "a.jsonl")},
                    "syslog": {"enabled": True, "address": "udp://127.0.0.1:9"},
                    "webhook": {"enabled": True, "url": "http://127.0.0.1:9/"}},
        "store": {"path": str(tmp_path / "a.db")},
    }
    cfg = load_config(str(EXAMPLE), over)
    pipe = cfg.build_alert_pipeline()
    try:
        names = [type(o).__name__ for o in pipe.dispatcher.outputs]
        assert names == ["StdoutOutput", "FileOutput", "SyslogOutput", "WebhookOutput"]
    finally:
        pipe.close(timeout=0)


# --- errors name file:line and the key ----------------------------------------------

BAD = [
    ("sensors:\n  ringbuf_size: 1000\n", 2, "sensors.ringbuf_size"),
    ("sensors:\n  args_max: 5\n", 2, "sensors.args_max"),
    ("sensors:\n  dns_ports: [53, 70000]\n", 2, "sensors.dns_ports"),
    ("sensors:\n  dns_ports: [true]\n", 2, "sensors.dns_ports"),
    ("sensors:\n  ignore_comms: [5]\n", 2, "sensors.ignore_comms"),
    ("scope:\n  mode: everywhere\n", 2, "scope.mode"),
    ("scope:\n  namespaces:\n    include: default\n", 3, "scope.namespaces.include"),
    ("containers:\n  hold: -1\n", 2, "containers.hold"),
    ("containers:\n  grace: .inf\n", 2, "containers.grace"),
    ("kubernetes:\n  enabled: maybe\n", 2, "kubernetes.enabled"),
    ("kubernetes:\n  node_name: [a]\n", 2, "kubernetes.node_name"),
    ("# c\nmin_priority: loud\n", 2, "min_priority"),
    ("rule_matching: some\n", 1, "rule_matching"),
    ("rules: 5\n", 1, "rules"),
    ("bogus: 1\n", 1, "bogus"),
    ("sensors:\n  nope: 1\n", 2, "sensors.nope"),
]

BAD_OUTPUTS = [
    ("outputs:\n  webhook:\n    enabled: true\n    url: http://127.0.0.1:9/\n    timeout: -1\n",
     5, "outputs.webhook.timeout"),
    ("outputs:\n  stdout:\n    format: xml\n", 3, "outputs.stdout.format"),
    ("outputs:\n  file:\n    path: /tmp/x\n    max_bytes: lots\n", 4, "outputs.file.max_bytes"),
    ("store:\n  max_age: forever\n", 2, "store.max_age"),
    ("rate_limit:\n  window: -2\n", 2, "rate_limit.window"),
    ("outputs:\n  pager: {}\n", 2, "outputs"),
    ("outputs:\n  file:\n    path: /tmp/x\n    max_byte: 1\n", 4, "outputs.file"),
]


@pytest.mark.parametrize("text,line,key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_value_names_file_line_and_key(tmp_path, text, line, key):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: {key}"), msg


@pytest.mark.parametrize("text,line,key", BAD_OUTPUTS, ids=[b[2] for b in BAD_OUTPUTS])
def test_bad_output_value_names_file_line_and_key(tmp_path, text, line, key):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    cfg = load_config(str(p))
    with pytest.raises(ConfigError) as ei:
        cfg.build_alert_pipeline().close(0)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: {key}"), msg


@pytest.mark.parametrize("text", [
    "a: [\n",                               # not YAML
    "- 1\n- 2\n",                           # not a mapping
    "? [a, b]\n: 1\n",                      # a key YAML cannot hash
    "rules: !!python/name:os.system x\n",   # a tag the safe loader refuses
    "rules: !custom x\n",
    "\x00",
])
def test_unloadable_yaml_is_config_error(tmp_path, text):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    assert str(ei.value).startswith(f"{p}:")


def test_missing_and_directory_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path))


def test_empty_config_is_defaults(tmp_path):
    p = tmp_path / "vigil.yaml"
    p.write_text("# nothing\n")
    cfg = load_config(str(p))
    assert cfg["sensors"] == DEFAULTS["sensors"]


# --- fuzz --------------------------------------------------------------------------

SPEC: dict = {
    "rules": None, "min_priority": None, "rule_matching": None,
    "sensors": {k: None for k in SECTIONS["sensors"]},
    "scope": {"mode": None, "namespaces": {"include": None, "exclude": None}},
    "containers": {k: None for k in SECTIONS["containers"]},
    "kubernetes": {k: None for k in SECTIONS["kubernetes"]},
    "outputs": {n: {k: None for k in ks} for n, ks in OUTPUT_KEYS.items()},
    "store": {k: None for k in STORE_KEYS},
    "rate_limit": {k: None for k in RATE_KEYS},
}

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(),
    st.text(max_size=10),
    st.sampled_from(["16MiB", "4096", "65536", "10s", "1h30m", "-1", "0", "auto", "json", "text",
                     "first", "all", "host", "containers", "warning", "info", "local0", "full",
                     "http://127.0.0.1:9/", "udp://127.0.0.1:9", "1e400", "nan", ""]),
)
_values = st.recursive(
    _scalars,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
    max_leaves=6)


def _section(spec):
    if spec is None:
        return _values
    keys = sorted(spec)
    known = st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)).flatmap(
        lambda ks: st.fixed_dictionaries({k: _section(spec[k]) for k in ks}))
    return st.one_of(known, known, known, _values)


_configs = _section(SPEC)


def _sandbox(data, tmp: str):
    """Keep the fuzzed config from touching the machine: store and file paths
    go to tmp, the webhook and syslog to a closed local port."""
    if not isinstance(data, dict):
        return data
    store = data.get("store")
    if store in (None, True) or "store" not in data:
        data["store"] = {"path": os.path.join(tmp, "s.db")}
    elif isinstance(store, dict):
        store["path"] = os.path.join(tmp, "s.db")
    outs = data.get("outputs")
    if isinstance(outs, dict):
        for name, target in (("file", ("path", os.path.join(tmp, "a.jsonl"))),
                             ("webhook", ("url", "http://127.0.0.1:9/")),
                             ("syslog", ("address", "udp://127.0.0.1:9"))):
            sec = outs.get(name)
            if isinstance(sec, dict):
                sec[target[0]] = target[1]
            elif sec is not None and sec is not False:
                outs[name] = {target[0]: target[1]}
    return data


def _check(text: str, tmp: str, build: bool = True) -> None:
    p = os.path.join(tmp, "vigil.yaml")
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        cfg = load_config(p)
        if build:
            build_alert_pipeline(cfg)
    except ConfigError as e:
        assert str(e).startswith(p), str(e)
        return
    # what validated is usable
    assert isinstance(cfg["sensors"]["ringbuf_size"], int)
    assert math.isfinite(cfg["containers"]["hold"]) and math.isfinite(cfg["containers"]["grace"])
    for k in ("include", "exclude"):
        v = (cfg["scope"].get("namespaces") or {}).get(k) or []
        assert isinstance(v, list) and all(isinstance(x, str) for x in v)
    assert all(isinstance(c, str) for c in cfg["sensors"]["ignore_comms"])


@SETTINGS
@given(_configs)
def test_fuzz_structured_config(data):
    with tempfile.TemporaryDirectory() as tmp:
        data = _sandbox(data, tmp)
        try:
            text = yaml.safe_dump(data)
        except yaml.YAMLError:
            return
        _check(text, tmp)


def build_alert_pipeline(cfg) -> None:
    cfg.build_alert_pipeline().close(timeout=0)


_FRAGMENTS = ["sensors:", "outputs:", "store:", "rules:", "scope:", "  ", "\n", "- ", ": ", "{", "}",
              "[", "]", "!!binary", "&a", "*a", "? ", "'", '"', "#", "ringbuf_size", "1", "true",
              "null", "\t", "%YAML 1.1", "---", "...", "|", ">", "!!python/object:x", "<<: *a"]


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=4)), max_size=25))
def test_fuzz_raw_text(parts):
    with tempfile.TemporaryDirectory() as tmp:
        text = "".join(parts)
        # only load: the default store path is a real one; the structured fuzz builds
        _check(text, tmp, build=False)


def test_precedence_file_env_flags(tmp_path, monkeypatch):
    p = tmp_path / "vigil.yaml"
    p.write_text("min_priority: notice\nkubernetes:\n  node_name: ''\n")
    monkeypatch.delenv("VIGIL_MIN_PRIORITY", raising=False)
    monkeypatch.delenv("VIGIL_NODE_NAME", raising=False)
    monkeypatch.setenv("NODE_NAME", "node-a")
    assert load_config(str(p))["min_priority"] == "notice"
    assert load_config(str(p))["kubernetes"]["node_name"] == "node-a"
    monkeypatch.setenv("VIGIL_MIN_PRIORITY", "error")
    assert load_config(str(p))["min_priority"] == "error"
    assert load_config(str(p), {"min_priority": "warning"})["min_priority"] == "warning"
    monkeypatch.setenv("VIGIL_MIN_PRIORITY", "loud")
    with pytest.raises(ConfigError, match="min_priority"):
        load_config(str(p))
    # -r replaces the rules list, --output only touches stdout's format
    p.write_text("rules: [/a.yaml, /b.yaml]\noutputs:\n  stdout: {enabled: true, format: text}\n")
    monkeypatch.delenv("VIGIL_MIN_PRIORITY")
    cfg = load_config(str(p), {"rules": ["/c.yaml"], "outputs": {"stdout": {"format": "json"}}})
    assert cfg["rules"] == ["/c.yaml"]
    assert cfg["outputs"]["stdout"] == {"enabled": True, "format": "json"}
