"""JSON-lines file output with size-based rotation, on real files."""
from __future__ import annotations

import json
import os

import pytest

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.file import FileOutput

NOW = 1_700_000_000_000_000_000


def mk(i):
    return Alert(time=NOW + i, rule="R", priority="warning", output=f"event number {i:05d}",
                 output_fields={"i": i}, hostname="h")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def line_len():
    return len(json.dumps(mk(0).to_falco_json(), separators=(",", ":")).encode()) + 1


def test_writes_json_lines(tmp_path):
    p = tmp_path / "sub" / "alerts.jsonl"
    out = FileOutput(str(p), max_bytes=0)
    for i in range(3):
        assert out.emit(mk(i)) is True
    out.close()
    rows = read_lines(p)
    assert [r["output_fields"]["i"] for r in rows] == [0, 1, 2]
    assert rows[0] == mk(0).to_falco_json()
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    assert out.stats()["written"] == 3


def test_rotation_names_order_and_limits(tmp_path):
    p = str(tmp_path / "alerts.jsonl")
    n = line_len()
    out = FileOutput(p, max_bytes=3 * n, backups=2)   # 3 lines per file
    for i in range(11):
        out.emit(mk(i))
    out.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
    for f in files:
        assert os.path.getsize(tmp_path / f) <= 3 * n
    seq = lambda f: [r["output_fields"]["i"] for r in read_lines(tmp_path / f)]  # noqa: E731
    assert seq("alerts.jsonl.2") == [3, 4, 5]       # oldest kept
    assert seq("alerts.jsonl.1") == [6, 7, 8]
    assert seq("alerts.jsonl") == [9, 10]
    assert out.stats()["rotations"] == 3


def test_rotation_with_many_backups_loses_nothing(tmp_path):
    p = str(tmp_path / "alerts.jsonl")
    out = FileOutput(p, max_bytes=5 * line_len(), backups=50)
    for i in range(100):
        out.emit(mk(i))
    out.close()
    got = []
    for k in range(50, 0, -1):
        if os.path.exists(f"{p}.{k}"):
            got += [r["output_fields"]["i"] for r in read_lines(f"{p}.{k}")]
    got += [r["output_fields"]["i"] for r in read_lines(p)]
    assert got == list(range(100))


def test_zero_backups_starts_afresh(tmp_path):
    p = str(tmp_path / "alerts.jsonl")
    out = FileOutput(p, max_bytes=2 * line_len(), backups=0)
    for i in range(5):
        out.emit(mk(i))
    out.close()
    assert os.listdir(tmp_path) == ["alerts.jsonl"]
    assert [r["output_fields"]["i"] for r in read_lines(p)] == [4]


def test_appends_to_existing_file_and_counts_its_size(tmp_path):
    p = tmp_path / "alerts.jsonl"
    n = line_len()
    p.write_bytes(b"x" * (2 * n) + b"\n")
    out = FileOutput(str(p), max_bytes=3 * n, backups=1)
    out.emit(mk(0))
    out.close()
    assert (tmp_path / "alerts.jsonl.1").read_bytes() == b"x" * (2 * n) + b"\n"
    assert [r["output_fields"]["i"] for r in read_lines(p)] == [0]


def test_oversized_line_written_whole(tmp_path):
    p = str(tmp_path / "alerts.jsonl")
    out = FileOutput(p, max_bytes=10, backups=1)
    out.emit(mk(0))
    out.emit(mk(1))
    out.close()
    assert [r["output_fields"]["i"] for r in read_lines(p)] == [1]
    assert [r["output_fields"]["i"] for r in read_lines(p + ".1")] == [0]


def test_reopens_when_moved_away(tmp_path):
    p = str(tmp_path / "alerts.jsonl")
    out = FileOutput(p, max_bytes=0, fsync=True)
    out.emit(mk(0))
    os.rename(p, p + ".moved")                   # external logrotate
    out.emit(mk(1))
    out.close()
    assert [r["output_fields"]["i"] for r in read_lines(p + ".moved")] == [0]
    assert [r["output_fields"]["i"] for r in read_lines(p)] == [1]


def test_emit_after_close_raises_and_bad_args(tmp_path):
    out = FileOutput(str(tmp_path / "a.jsonl"))
    out.close()
    with pytest.raises(RuntimeError):
        out.emit(mk(0))
    with pytest.raises(ValueError):
        FileOutput(str(tmp_path / "b.jsonl"), max_bytes=-1)
    with pytest.raises(ValueError):
        FileOutput(str(tmp_path / "b.jsonl"), backups=-1)
