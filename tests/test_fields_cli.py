"""`vigil fields` (Falco's `falco --list`): the listing is the field registry,
every field has a type and a description, and every field Falco's own rules
files use that vigil supports is in it."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from vigil.rules.fields import FIELDS, known
from vigil.rules.fields.base import FAMILIES
from vigil.rules.parser import Compare, FieldRef, FieldValue, Transform, parse_condition

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import vigil  # noqa: E402

from falco_files import falco_dir  # noqa: E402  (the one lookup of Falco's files)

REPO = Path(__file__).resolve().parent.parent
FALCO_DIR = falco_dir() or REPO.parent / "shared" / "falco-rules"
FALCO_FILES = ("falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml")
_OUT_FIELD = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]*)(\[[^\]]*\])?")


@pytest.fixture(scope="module")
def listing():
    r = vigil("fields", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_listing_is_the_registry(listing):
    names = [f["name"] for f in listing]
    assert len(names) == len(set(names))
    assert set(names) == set(FIELDS) | {p + "<name>" for p in FAMILIES}
    from vigil.rules.fields.descriptions import DESCRIPTIONS
    both = [n for n in DESCRIPTIONS if n in FIELDS and FIELDS[n].desc]
    assert both == [], f"described twice (registry desc and descriptions.py): {both}"
    for f in listing:
        assert f["desc"].strip(), f"{f['name']} has no description"
        assert f["type"] and f["falco_type"], f["name"]
        if f["name"] in FIELDS:
            fd = FIELDS[f["name"]]
            assert f["type"] == fd.type and f["arg"] == fd.arg, f["name"]
            assert f["takes_argument"] == (fd.arg is not None)
            assert f["multi_value"] == fd.multi


def test_argument_fields(listing):
    by = {f["name"]: f for f in listing}
    assert by["proc.aname"]["arg"] == "index_opt" and by["proc.aname"]["takes_argument"]
    assert not by["proc.aname"]["argument_required"]
    assert by["container.label"]["argument_required"] and by["container.label"]["argument_form"] == "[KEY]"
    assert by["proc.name"]["takes_argument"] is False and by["proc.name"]["falco_type"] == "CHARBUF"
    assert by["evt.time"]["falco_type"] == "ABSTIME" and by["fd.sip"]["falco_type"] == "IPADDR"


def test_text_listing_and_prefix():
    r = vigil("fields")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == len(FIELDS) + len(FAMILIES)
    row = next(line for line in lines if line.startswith("proc.aname[N] "))
    assert "INT64" not in row and "CHARBUF" in row and "ancestor" in row
    r = vigil("fields", "fd.s")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names and all(n.startswith("fd.s") for n in names) and "fd.sip" in names


def _fields_of(node, out: set) -> None:
    """Every field a parsed condition names (left- and right-hand sides)."""
    if isinstance(node, FieldRef):
        out.add(node.name)
        return
    if isinstance(node, Transform):
        _fields_of(node.inner, out)
        return
    if isinstance(node, FieldValue):
        _fields_of(node.lhs, out)
        return
    if isinstance(node, Compare):
        _fields_of(node.lhs, out)
        _fields_of(node.rhs, out)
        return
    for attr in ("items", "item"):
        v = getattr(node, attr, None)
        if isinstance(v, list):
            for x in v:
                _fields_of(x, out)
        elif v is not None:
            _fields_of(v, out)


def falco_fields(path: Path) -> set:
    out: set = set()
    for item in yaml.safe_load(path.read_text()) or []:
        if not isinstance(item, dict):
            continue
        if "condition" in item and isinstance(item["condition"], str):
            _fields_of(parse_condition(item["condition"]), out)
        if isinstance(item.get("output"), str):
            out.update(m.group(1).rstrip(".") for m in _OUT_FIELD.finditer(item["output"]))
        for ex in item.get("exceptions") or ():
            fs = ex.get("fields") if isinstance(ex, dict) else None
            out.update([fs] if isinstance(fs, str) else fs or ())
    return out


@pytest.mark.parametrize("name", FALCO_FILES)
def test_every_supported_falco_field_is_listed(listing, name):
    path = FALCO_DIR / name
    assert path.exists(), f"Falco's rules files are not at {FALCO_DIR} (set VIGIL_FALCO_RULES_DIR)"
    used = falco_fields(path)
    assert len(used) > 20 and "proc.name" in used and "fd.name" in used
    listed = {f["name"] for f in listing}
    families = [p for p in FAMILIES if any(u.startswith(p) for u in used)]
    supported = {u for u in used if known(u)}
    missing = sorted(u for u in supported
                     if u not in listed and not any(u.startswith(p) for p in families))
    assert missing == [], missing
    for p in families:
        assert p + "<name>" in listed
