"""Events: the kinds registry, the C layouts mirrored in Python, decoding, capture files.

``from vigil.events import Event, Kind`` is the usual entry point.
"""
from vigil.events.kinds import KIND_BY_NAME, Kind  # noqa: F401
from vigil.events.model import FIELDS, Event, boot_offset_ns  # noqa: F401
