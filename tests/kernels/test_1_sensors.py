"""Every sensor program loads and attaches on this kernel, or is disabled alone with its reason."""
import pytest

from vigil.events import Kind
from vigil.events.kinds import ENFORCE_KINDS, SPECS

SENSING = frozenset(k for k in Kind if k not in ENFORCE_KINDS)
# the sensor objects (the enforcement objects are loaded by vigil.enforce)
SENSOR_OBJECTS = {x for k in SENSING for x in (SPECS[k].sensor,) + SPECS[k].also_sensors}


@pytest.mark.feature("sensors load")
def test_every_program_loads_or_says_why(everything, matrix):
    programs = everything.sensors.report.programs
    assert programs, "no program was autoloaded"
    assert {p.sensor for p in programs} == SENSOR_OBJECTS, "a sensor object is missing"
    for p in programs:
        # each program is attached, or disabled with the kernel's reason; never both, never neither
        assert p.attached != bool(p.error), f"{p.sensor}/{p.name}: attached={p.attached} " \
                                            f"error={p.error!r}"
    bad = [p for p in programs if p.error]
    for p in bad:
        matrix.degrade("sensors load", f"{p.sensor}/{p.name} ({p.section}): {p.error}")
    ok = len(programs) - len(bad)
    matrix.note("sensors load", f"{ok}/{len(programs)} programs attached in "
                                f"{len(SENSOR_OBJECTS)} objects")
    # every sensing kind but those whose every program the kernel refused is served
    lost = {p.kind for p in bad} - everything.sensors.active_kinds()
    assert everything.sensors.active_kinds() | lost >= {p.kind for p in programs if p.kind}
