"""Events: the kinds registry, the C layouts mirrored in Python, decoding, capture files.

``from vigil.events import Event, Kind`` is the usual entry point.
"""
from vigil.events.model import FIELDS, KIND_BY_NAME, Event, Kind, boot_offset_ns  # noqa: F401
