"""The one size and duration grammar (Kubernetes' SI/IEC convention), and
errors that name file:line and the key path."""
from __future__ import annotations

import pytest

from vigil.config import ConfigError, load_config
from vigil.config.units import parse_duration, parse_size

SIZES = [
    (0, 0), (4096, 4096), ("4096", 4096), ("100", 100), ("16B", 16),
    ("16MB", 16_000_000), ("16M", 16_000_000), ("16mb", 16_000_000),
    ("16MiB", 16_777_216), ("16mib", 16_777_216),
    ("1.5MiB", 1_572_864), ("0.5GB", 500_000_000), ("1GiB", 1 << 30),
    ("512k", 512_000), ("512K", 512_000), ("512KiB", 524_288), ("2 G", 2_000_000_000),
    ("1T", 10 ** 12), ("1TiB", 1 << 40), (".5KiB", 512),
]
BAD_SIZES = ["", "ten", "16XB", "16 MiBs", "5 parsecs", "-1", "-1MiB", -1, True,
             float("inf"), "1e6", "0x10", "16 M B"]


@pytest.mark.parametrize("value,want", SIZES, ids=[repr(s[0]) for s in SIZES])
def test_size(value, want):
    assert parse_size(value) == want


@pytest.mark.parametrize("value", BAD_SIZES, ids=map(repr, BAD_SIZES))
def test_bad_size(value):
    with pytest.raises(ValueError) as ei:
        parse_size(value)
    msg = str(ei.value)
    assert ("negative" in msg) == (str(value).startswith("-")), msg


DURATIONS = [
    (30, 30.0), (1.5, 1.5), ("2.5", 2.5), ("250ms", 0.25), ("1.5s", 1.5), (".5s", 0.5),
    ("10m", 600.0), ("1h", 3600.0), ("2d", 172800.0), ("2w", 14 * 86400.0),
    ("1h30m", 5400.0), ("1H 5S", 3605.0), ("5 s", 5.0),
]
BAD_DURATIONS = ["", "abc", "10x", "1y", "10mm", "5m garbage", "m", "-5", "-1s", -1, True,
                 float("nan"), "inf"]


@pytest.mark.parametrize("value,want", DURATIONS, ids=[repr(d[0]) for d in DURATIONS])
def test_duration(value, want):
    assert parse_duration(value) == want


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=map(repr, BAD_DURATIONS))
def test_bad_duration(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def _load(tmp_path, text):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    return p, load_config(str(p))


def test_every_section_reads_sizes_the_same(tmp_path):
    _, cfg = _load(tmp_path, "sensors:\n  ringbuf_size: 16MiB\nstore:\n  max_bytes: 16MB\n"
                             f"  path: {tmp_path}/a.db\n")
    assert cfg["sensors"]["ringbuf_size"] == 16_777_216
    pipe = cfg.build_alert_pipeline()
    try:
        assert pipe.store.max_bytes == 16_000_000
    finally:
        pipe.close(timeout=0)


@pytest.mark.parametrize("text,line,key,words", [
    # 16MB is 16,000,000 bytes: not a power of two, and the message says why
    ("# ring\nsensors:\n  ringbuf_size: 16MB\n", 3, "sensors.ringbuf_size", "16,000,000"),
    ("sensors:\n  ringbuf_size: 1.5MiB\n", 2, "sensors.ringbuf_size", "power of two"),
    ("sensors:\n  ringbuf_size: 2KiB\n", 2, "sensors.ringbuf_size", "at least 4096"),
    ("sensors:\n  ringbuf_size: 16QB\n", 2, "sensors.ringbuf_size", "not a size"),
    ("sensors:\n  ringbuf_size: -4096\n", 2, "sensors.ringbuf_size", "negative"),
    ("containers:\n  hold: 1y\n", 2, "containers.hold", "not a duration"),
    ("store:\n  enabled: true\n  max_age: -1s\n", 3, "store.max_age", "negative"),
    ("outputs:\n  file:\n    path: /tmp/x\n    max_bytes: 1.5XiB\n", 4,
     "outputs.file.max_bytes", "not a size"),
    ("rate_limit:\n  window: 1h30x\n", 2, "rate_limit.window", "not a duration"),
])
def test_errors_name_file_line_and_key(tmp_path, text, line, key, words):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(str(p)).build_alert_pipeline().close(timeout=0)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: {key}: "), msg
    assert words in msg, msg


def test_ringbuf_decimal_iec_that_is_a_power_of_two(tmp_path):
    _, cfg = _load(tmp_path, "sensors:\n  ringbuf_size: 0.5MiB\n")
    assert cfg["sensors"]["ringbuf_size"] == 1 << 19
