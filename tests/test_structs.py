"""The ctypes mirrors in vigil.events.structs must match the C structs in the BTF of
every built BPF object: same size, same members at the same offsets with the
same sizes.  A change made on one side only fails here."""
import ctypes

import pytest

# btf_structs: imported from here by test_enforce_tables and test_metrics_layouts too
from conftest import SENSOR_NAMES, btf_structs  # noqa: F401
from vigil.events import structs as S


def _resolve(by_id, tid):
    """Skip typedefs/const/volatile to the real type."""
    t = by_id[tid]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        t = by_id[t["type_id"]]
    return t


def _type_size(by_id, tid) -> int:
    t = _resolve(by_id, tid)
    if t["kind"] in ("INT", "STRUCT", "UNION", "ENUM", "ENUM64"):
        return t["size"]
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _type_size(by_id, t["type_id"])
    if t["kind"] == "PTR":
        return 8
    raise ValueError(f"unexpected BTF kind {t['kind']}")


def btf_layout(btf: dict, name: str, prefix: str = "", base: int = 0) -> tuple:
    """(size, [(member, offset, size)]) of a C struct, nested structs flattened
    like vigil.structs.flat_fields does (members of `h` keep their own names)."""
    by_id = btf["by_id"]
    st = btf["structs"][name]
    out = []
    for m in st["members"]:
        if m["bits_offset"] % 8:
            raise ValueError(f"{name}.{m['name']}: bit field")
        off = base + m["bits_offset"] // 8
        t = _resolve(by_id, m["type_id"])
        if t["kind"] == "STRUCT":
            out.extend(btf_layout(btf, t["name"], "", off)[1] if t.get("name") in btf["structs"]
                       else [])
        else:
            out.append((prefix + m["name"], off, _type_size(by_id, m["type_id"])))
    return st["size"], out


def mirror_layout(cls) -> tuple:
    return ctypes.sizeof(cls), [(n, off, ctypes.sizeof(t)) for n, t, off in S.flat_fields(cls)]


def member_diffs(name: str, c: dict, python: dict, where, differ) -> list:
    """Differences, member by member, between the C side c and the Python side
    python ({member: value}) of name: where(value) says where a one-sided member
    is, differ(c value, Python value) how a shared one differs."""
    diffs = []
    for member in c.keys() | python.keys():
        if member not in python:
            diffs.append(f"{name}.{member}: only in C {where(c[member])}")
        elif member not in c:
            diffs.append(f"{name}.{member}: only in Python {where(python[member])}")
        elif c[member] != python[member]:
            diffs.append(f"{name}.{member}: {differ(c[member], python[member])}")
    return diffs


def compare(btf: dict, name: str, cls) -> list:
    """Human-readable differences between a C struct and its mirror; [] if equal."""
    if name not in btf["structs"]:
        return [f"struct {name} not in BTF"]
    csize, cmembers = btf_layout(btf, name)
    psize, pmembers = mirror_layout(cls)
    diffs = []
    if csize != psize:
        diffs.append(f"{name}: size C {csize} != Python {psize}")
    diffs += member_diffs(name, {n: (o, s) for n, o, s in cmembers},
                          {n: (o, s) for n, o, s in pmembers},
                          lambda at: f"at offset {at[0]}",
                          lambda c, py: f"C (offset, size) {c} != Python {py}")
    if not diffs and [n for n, _, _ in cmembers] != [n for n, _, _ in pmembers]:
        diffs.append(f"{name}: member order differs")
    return sorted(diffs)


@pytest.mark.parametrize("sensor", SENSOR_NAMES)
def test_every_mirror_matches_btf(btfs, sensor):
    btf = btfs[sensor]
    problems = []
    for name, cls in S.MIRRORS.items():
        problems += compare(btf, name, cls)
    assert problems == []


def test_prefix_key_matches_btf(btfs):
    assert compare(btfs["file"], "prefix_key", S.PrefixKey) == []


def test_mirrors_cover_every_event_layout(btfs):
    """Every struct in union ev_layouts (the C list of layouts) has a mirror."""
    btf = btfs["proc"]
    union = [t for t in btf["by_id"].values() if t.get("kind") == "UNION" and t.get("name") == "ev_layouts"]
    assert union
    names = {_resolve(btf["by_id"], m["type_id"])["name"] for m in union[0]["members"]}
    assert names == set(S.MIRRORS)


def test_struct_formats_cover_whole_struct():
    for cls in S.MIRRORS.values():
        fmt, names = S.struct_format(cls)
        assert fmt.size == ctypes.sizeof(cls)
        assert not any(n.startswith("_") for n in names)


# --- the comparison itself must catch one-sided edits ---

def _mutated(cls, change):
    """A copy of a mirror with its _fields_ changed by change(list) -> list."""
    fields = change(list(cls._fields_))
    return type(cls.__name__ + "Mutated", (ctypes.Structure,), {"_fields_": fields})


def test_compare_detects_type_change(btfs):
    btf = btfs["file"]
    bad = _mutated(S.EvOpen, lambda f: [(n, ctypes.c_int32 if n == "ret" else t) for n, t in f])
    diffs = compare(btf, "ev_open", bad)
    assert any("ev_open.ret" in d for d in diffs)
    assert any("size" in d for d in diffs) or any("flags" in d for d in diffs)


def test_compare_detects_removed_padding(btfs):
    btf = btfs["net"]
    bad = _mutated(S.EvNet, lambda f: [x for x in f if x[0] != "_pad"])
    diffs = compare(btf, "ev_net", bad)
    assert any("ev_net._pad: only in C" in d for d in diffs)
    assert any("ev_net.saddr" in d for d in diffs)


def test_compare_detects_renamed_member(btfs):
    btf = btfs["proc"]
    bad = _mutated(S.EvExit, lambda f: [("code" if n == "exit_code" else n, t) for n, t in f])
    assert compare(btf, "ev_exit", bad) == ["ev_exit.code: only in Python at offset 56",
                                            "ev_exit.exit_code: only in C at offset 56"]


def test_compare_detects_header_change(btfs):
    btf = btfs["proc"]
    hdr = _mutated(S.EvHdr, lambda f: [(n, ctypes.c_char * 32 if n == "comm" else t) for n, t in f])
    bad = _mutated(S.EvFork, lambda f: [(n, hdr if n == "h" else t) for n, t in f])
    diffs = compare(btf, "ev_fork", bad)
    assert any("ev_fork.comm" in d for d in diffs)
    assert any("ev_fork.child_pid" in d for d in diffs)


def test_compare_detects_array_length_change(btfs):
    btf = btfs["sys"]
    bad = _mutated(S.EvSys, lambda f: [(n, ctypes.c_char * 128 if n == "path" else t) for n, t in f])
    assert compare(btf, "ev_sys", bad) == [
        "ev_sys.path: C (offset, size) (128, 256) != Python (128, 128)",
        "ev_sys: size C 384 != Python 256"]


def test_compare_clean_copy_is_equal(btfs):
    same = _mutated(S.EvDns, lambda f: f)
    assert compare(btfs["dns"], "ev_dns", same) == []
