"""The kinds registry (vigil.events.kinds) against the built BPF objects: every
C enum of the shared events header against its Python side (from the objects'
BTF), every kind's layout and decoder, every kind served by some program, and
what the registry derives (Kind, trace groups, the rules' tables)."""
import ctypes
import re
import shutil
import subprocess

import pytest

from conftest import BPF_SRC, SENSOR_NAMES
from test_structs import member_diffs
from vigil.cli.trace_views import TRACE_KINDS
from vigil.events import Event, Kind, kinds
from vigil.events import structs as S
from vigil.events.decode import Decoder
from vigil.kernel import filters, libbpf
from vigil.kernel.sensors import program_kind


def python_enums() -> dict:
    """What the Python side says each C enum of events.h holds."""
    ev_kind = {f"EV_{s.name.upper()}": s.value for s in kinds.KINDS}
    ev_kind["EV_MAX"] = kinds.EV_MAX
    ev_syscall = {"SC_NONE": 0}
    ev_syscall.update({f"SC_{n.upper()}": i for i, n in kinds.SYSCALL_NAMES.items() if n})
    open_want = {"OPEN_WANT_READ": filters.OPEN_WANT_READ,
                 "OPEN_WANT_WRITE": filters.OPEN_WANT_WRITE,
                 "OPEN_WANT_ALL": filters.OPEN_WANT_ALL}
    open_via = {f"VIA_{(n or 'syscall').upper()}": i for i, n in enumerate(kinds.OPEN_VIA)}
    open_watched = {f"WATCHED_{(n or 'none').upper()}": i for i, n in enumerate(kinds.OPEN_WATCHED)}
    file_hook = {f"FILE_HOOK_{n.upper()}": i for i, n in enumerate(kinds.FILE_HOOKS) if n}
    from vigil.kernel import counters
    return {"file_hook": file_hook, "ev_kind": ev_kind, "ev_syscall": ev_syscall, "open_want": open_want,
            "open_via": open_via, "open_watched": open_watched,
            "exe_flag": dict(S.EXE_FLAGS),
            "ev_record": dict(kinds.RECORDS), "stat_slot": dict(counters.STAT_SLOTS_ENUM),
            "l7_dir": dict(S.L7_DIRS), "l7_proto": dict(S.L7_PROTOS), "l7_flag": dict(S.L7_FLAGS)}


def enum_diffs(btf: dict, name: str, python: dict) -> list:
    """Human-readable differences between a C enum in the BTF and its Python side."""
    c = btf["enums"].get(name)
    if c is None:
        return [f"enum {name} not in BTF"]
    return sorted(member_diffs(name, c, python, lambda v: f"(= {v})",
                               lambda cv, pv: f"C {cv} != Python {pv}"))


@pytest.fixture(scope="module")
def programs(bpf_objects) -> dict:
    """{sensor: [program names]} of every object, read by libbpf (not loaded)."""
    out = {}
    for s in SENSOR_NAMES:
        obj = libbpf.BpfObject(str(bpf_objects / f"{s}.bpf.o"))
        try:
            out[s] = [p.name for p in obj.programs()]
        finally:
            obj.close()
    return out


def test_python_covers_every_enum_of_the_events_header():
    declared = set(re.findall(r"^enum (\w+) \{", (BPF_SRC / "events.h").read_text(), re.M))
    assert declared == set(python_enums())


@pytest.mark.parametrize("sensor", SENSOR_NAMES)
def test_every_c_enum_matches_python(btfs, sensor):
    problems = []
    for name, python in python_enums().items():
        problems += enum_diffs(btfs[sensor], name, python)
    assert problems == []


def test_enum_comparison_catches_one_sided_edits(btfs):
    btf = btfs["file"]
    py = python_enums()
    moved = dict(py["ev_kind"], EV_OPEN=40)
    assert enum_diffs(btf, "ev_kind", moved) == ["ev_kind.EV_OPEN: C 4 != Python 40"]
    fewer = dict(py["ev_syscall"])
    del fewer["SC_WRITE"]
    assert enum_diffs(btf, "ev_syscall", fewer) == [
        f"ev_syscall.SC_WRITE: only in C (= {kinds.SYSCALLS.index('write')})"]
    more = dict(py["open_want"], OPEN_WANT_EXEC=4)
    assert enum_diffs(btf, "open_want", more) == ["open_want.OPEN_WANT_EXEC: only in Python (= 4)"]
    assert enum_diffs(btf, "no_such_enum", {}) == ["enum no_such_enum not in BTF"]


def test_open_want_all_is_read_or_write(btfs):
    ow = btfs["file"]["enums"]["open_want"]
    assert ow["OPEN_WANT_ALL"] == ow["OPEN_WANT_READ"] | ow["OPEN_WANT_WRITE"] == 3


def test_every_kind_has_a_decoder_for_its_layout_of_the_c_size(btfs):
    c_name = {cls: name for name, cls in S.MIRRORS.items()}
    dec = Decoder()
    for spec in kinds.KINDS:
        # a kind without a decoder of its own is read by the generic one
        fn = getattr(dec, spec.decoder) if spec.decoder else dec._table[spec.value][2]
        assert fn.layout is spec.layout, spec.name
        st = btfs[spec.sensor]["structs"][c_name[spec.layout]]
        assert st["size"] == ctypes.sizeof(spec.layout), spec.name
        assert dec._table[spec.value][0] is spec.kind


def test_decoder_refuses_a_registry_naming_the_wrong_decoder(monkeypatch):
    import vigil.events.decode as D
    wrong = kinds.KindSpec("open", 4, "file", S.EvOpen, "_path2")
    monkeypatch.setattr(D, "KINDS", (wrong,))
    with pytest.raises(TypeError, match="decoder _path2 reads EvPath2, not EvOpen"):
        D.Decoder()


def test_every_kind_is_served_by_programs_of_its_sensor(programs):
    served = {}
    for sensor, names in programs.items():
        for name in names:
            k = program_kind(name)
            assert k is not None, f"{sensor}: program {name} names no kind"
            assert sensor in (k.spec.sensor,) + k.spec.also_sensors, \
                f"{name} is in {sensor}, the registry says {k.spec.sensor}"
            served.setdefault(k, set()).add(name)
    # a derived kind (http) is made in user space from its source kind's events
    assert set(served) == set(Kind) - set(kinds.DERIVED)
    assert all(src in served for src in kinds.DERIVED.values())


def test_registry_sensors_are_the_sources():
    assert set(kinds.SENSORS) == set(SENSOR_NAMES)


def test_kind_enum_is_built_from_the_registry():
    assert [(k.label, int(k)) for k in Kind] == [(s.name, s.value) for s in kinds.KINDS]
    assert all(k.spec.kind is k for k in Kind)
    assert kinds.KIND_BY_NAME["cgroup_mkdir"] is Kind.CGROUP_MKDIR
    assert max(Kind) < kinds.EV_MAX


def test_bookkeeping_kinds():
    from vigil import pipeline
    assert kinds.LIFECYCLE == {Kind.EXEC, Kind.FORK, Kind.EXIT} == pipeline.LIFECYCLE
    assert kinds.CGROUP_KINDS == {Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR} == pipeline.CGROUP_KINDS


def test_trace_groups_come_from_the_registry():
    for group in ("file", "net"):
        assert TRACE_KINDS[group] == {k for k in Kind if group in k.spec.trace}
    assert TRACE_KINDS["file"] == {Kind.OPEN, Kind.UNLINK, Kind.RENAME, Kind.LINK, Kind.SYMLINK,
                                   Kind.MKDIR, Kind.CHMOD}
    assert TRACE_KINDS["net"] == {Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.CLOSE,
                                  Kind.DNS}
    assert TRACE_KINDS["all"] == set(Kind) - kinds.CGROUP_KINDS - {Kind.L7, Kind.HTTP}
    for view in ("open", "connect", "accept", "dns"):
        assert TRACE_KINDS[view] == {kinds.KIND_BY_NAME[view]}
    # as execsnoop: the exec view has the failed execs too (issue 9, RET column)
    assert TRACE_KINDS["exec"] == {Kind.EXEC, Kind.EXECFAIL}


def test_rules_tables():
    assert kinds.FALCO_TYPES[Kind.OPEN][0] == "openat"
    assert kinds.TYPE_TO_KIND["renameat2"] is Kind.RENAME
    assert kinds.PRODUCED_TYPES == frozenset(kinds.TYPE_TO_KIND)
    assert Kind.CGROUP_MKDIR not in kinds.RULE_KINDS and Kind.EXEC in kinds.RULE_KINDS
    assert kinds.KIND_DIRS[Kind.PTRACE] == {"<", ">"} and kinds.KIND_DIRS[Kind.OPEN] == {"<"}
    assert kinds.CATEGORIES[Kind.MEMFD] == "memory"
    # the facts are the ones the rules fields used (until they read the registry)
    from vigil.rules import fields as F
    assert kinds.FALCO_TYPES is F.KIND_TYPES
    assert kinds.KIND_DIRS is F.KIND_DIRS
    assert kinds.TYPE_TO_KIND is F.TYPE_TO_KIND
    assert kinds.RULE_KINDS is F.RULE_KINDS
    assert kinds.CATEGORIES is F.CATEGORY


def test_trace_json_and_detail_of_a_kind():
    ev = Event(Kind.MEMFD, path="memfd:x", flags=1, ret=3)
    assert Kind.MEMFD.spec.trace_json(ev) == {"name": "memfd:x", "flags": 1, "ret": 3}
    assert Kind.MEMFD.spec.trace_detail(ev) == "name=memfd:x ret=3"
    net = Event(Kind.CONNECT, syscall="connect", family="AF_UNIX", path="/run/x", ret=-2)
    assert net.kind.spec.trace_json(net)["path"] == "/run/x"
    assert "path" not in net.kind.spec.trace_json(Event(Kind.CONNECT, family="AF_INET"))
    assert net.kind.spec.trace_detail(net) == "connect unix /run/x ret=ENOENT"
    assert Kind.CGROUP_MKDIR.spec.trace_detail(Event(Kind.CGROUP_MKDIR)) == ""


def test_registry_refuses_bad_entries(monkeypatch):
    bad = kinds.KINDS + (kinds.KindSpec("open2", 4, "file", S.EvOpen, "_open"),)
    monkeypatch.setattr(kinds, "KINDS", bad)
    with pytest.raises(ValueError, match="duplicate"):
        kinds._check()


def test_rodata_variables_are_read_from_btf(tmp_path, bpf_objects):
    """Offsets of several .rodata variables come from the BTF libbpf laid out,
    and set_const writes there."""
    if shutil.which("clang") is None:
        pytest.skip("clang not installed")
    src = tmp_path / "t.bpf.c"
    src.write_text('#include "vigil.h"\n'
                   "const volatile __u8 first_one = 1;\n"
                   "const volatile __u64 second_one = 2;\n"
                   'SEC("tp/syscalls/sys_enter_getpid")\n'
                   "int t(void *ctx) { return first_one + second_one + cfg_args_max; }\n")
    subprocess.run(["clang", "-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86",
                    f"-I{BPF_SRC}", "-c", str(src), "-o", str(tmp_path / "t.bpf.o")], check=True)
    obj = libbpf.BpfObject(str(tmp_path / "t.bpf.o"))
    try:
        v = obj.section_vars(".rodata")
        assert v == {"cfg_args_max": (0, 4), "first_one": (4, 1), "second_one": (8, 8)}
        obj.set_const("second_one", (7).to_bytes(8, "little"))
        obj.set_const("cfg_args_max", (64).to_bytes(4, "little"))
        assert bytes(obj.rodata()) == bytes([64, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0])
        with pytest.raises(KeyError):
            obj.set_const("third_one", b"\0")
        with pytest.raises(ValueError):
            obj.set_const("first_one", b"\0\0")
    finally:
        obj.close()
    for s in SENSOR_NAMES:
        obj = libbpf.BpfObject(str(bpf_objects / f"{s}.bpf.o"))
        try:
            assert obj.section_vars(".rodata")["cfg_args_max"] == (0, 4), s
        finally:
            obj.close()


def test_generic_decoder_sets_a_field_per_member(monkeypatch):
    """A kind without a decoder of its own is read member by member: the
    checklist's 'one registry entry' needs no decoder edit."""
    import vigil.events.decode as D
    from vigil.events.structs import EvHdr

    class EvDemo(ctypes.Structure):
        _fields_ = [("h", EvHdr), ("count", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                    ("name", ctypes.c_char * 8)]

    monkeypatch.setattr(D, "KINDS", (kinds.KindSpec("open", 4, "file", EvDemo),))
    dec = D.Decoder()
    fn = dec._table[4][2]
    raw = bytearray(ctypes.sizeof(EvDemo))
    d = EvDemo.from_buffer(raw)
    d.h.ts, d.h.kind, d.h.pid, d.h.comm = 5, 4, 77, b"demo"
    d.count, d.name = 9, b"abc"
    ev = dec.decode(bytes(raw))
    assert (ev.pid, ev.comm, ev.count, ev.name) == (77, "demo", 9, "abc")
    assert "_pad" not in ev.__dict__ and fn.layout is EvDemo
