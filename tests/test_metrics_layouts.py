"""The metric programs' layouts (vigil.metrics.layouts) against the BTF of the
built objects: every member's name, offset and size, and each struct's size."""
import ctypes
import shutil

import pytest

from test_structs import _type_size, btf_structs
from vigil.metrics.kernel import OBJECTS, metrics_dir
from vigil.metrics.layouts import LAYOUTS


@pytest.fixture(scope="module")
def structs(bpf_objects):
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    out = {}
    for name in OBJECTS.values():
        b = btf_structs(metrics_dir() / f"{name}.bpf.o")
        for sname, t in b["structs"].items():
            if sname in LAYOUTS:
                out[sname] = (t, b["by_id"])
    return out


def test_every_layout_is_in_some_object(structs):
    assert set(structs) == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_matches_btf(structs, name):
    t, by_id = structs[name]
    py = LAYOUTS[name]
    assert ctypes.sizeof(py) == t["size"], name
    c_members = [(m["name"], m["bits_offset"] // 8, _type_size(by_id, m["type_id"]))
                 for m in t["members"]]
    py_members = [(f[0], getattr(py, f[0]).offset, getattr(py, f[0]).size)
                  for f in py._fields_]
    assert py_members == c_members
