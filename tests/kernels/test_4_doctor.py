"""`vigil doctor --json` on this kernel says what the suite observed (it runs last: modules run
in file order, so the matrix holds the earlier tests' outcomes by then)."""
import json
import subprocess

import pytest

from conftest import VIGIL

# doctor's feature (by the start of its name) -> the tests whose outcome shows it here
OBSERVED_BY = {
    "process events": ("events: proc", ["test_one_event_of_every_kind[exec]",
                                        "test_one_event_of_every_kind[fork]",
                                        "test_one_event_of_every_kind[exit]"]),
    "failed execs": ("events: proc", ["test_one_event_of_every_kind[execfail]"]),
    "file identity": ("events: file", ["test_one_event_of_every_kind[open]"]),
    "network connections": ("events: net", ["test_one_event_of_every_kind[connect]"]),
    "DNS queries": ("events: dns", ["test_one_event_of_every_kind[dns]"]),
    "kernel module load rule": ("events: sys", ["test_one_event_of_every_kind[module]"]),
    "container identity": ("events: cgroup", ["test_one_event_of_every_kind[cgroup_mkdir]"]),
    "enforcement": ("enforcement: connect deny", ["test_connect_denied_with_eperm"]),
    "exec kill enforcement": ("enforcement: kill on exec", ["test_exec_killed"]),
}
# the optional hooks a node may or may not have: one matrix row each
OPTIONAL_HOOKS = ("kprobe", "fentry", "lsm")
REQUIRED_HOOKS = ("tracepoint", "tp_btf", "ringbuf")


@pytest.fixture(scope="module")
def doctor():
    r = subprocess.run([VIGIL, "doctor", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _observed(matrix, feature, tests):
    """True (every test passed), False (one skipped: the kernel lacks it), None (unknown)."""
    row = matrix.features.get(feature)
    if row is None:
        return None
    outcomes = [row["tests"].get(t) for t in tests]
    if any(o in (None, "failed") for o in outcomes):
        return None
    return all(o == "passed" for o in outcomes)


@pytest.mark.feature("doctor")
def test_doctor_matches_what_was_observed(doctor, matrix):
    assert doctor["node"]["kernel"] == __import__("os").uname().release
    assert doctor["can_run"] is True, doctor["problems"]
    compared = 0
    for f in doctor["features"]:
        for prefix, (feature, tests) in OBSERVED_BY.items():
            if f["feature"] == prefix or f["feature"].startswith(prefix + " ("):
                seen = _observed(matrix, feature, tests)
                if seen is None:
                    continue
                assert f["available"] == seen, \
                    f"doctor says {f['feature']} available={f['available']} ({f['why']}), " \
                    f"the suite saw {feature} {'work' if seen else 'not work'}"
                compared += 1
        matrix.note("doctor", f"{f['feature']}: {'yes' if f['available'] else 'no'} ({f['why']})")
    assert compared >= 5, f"only {compared} doctor features could be compared with the suite"


@pytest.mark.parametrize("hook", OPTIONAL_HOOKS + REQUIRED_HOOKS)
def test_hook_probe(doctor, matrix, hook):
    h = {x["hook"]: x for x in doctor["hooks"]}.get(hook)
    assert h is not None, f"doctor has no {hook} probe"
    feature = f"hook: {hook}"
    if hook in REQUIRED_HOOKS:
        assert h["available"], f"{hook} is required: {h['error']}"
        return
    matrix.note(feature, h["what"])
    if h["available"]:
        matrix.outcome(feature, f"test_hook_probe[{hook}]", "passed", "")
    else:
        matrix.degrade(feature, h["error"])
