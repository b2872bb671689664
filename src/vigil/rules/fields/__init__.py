"""Falco field names mapped onto vigil events, one module per field class as in
libsinsp: :mod:`.evt`, :mod:`.proc` (and thread; :mod:`.proc_state` the kernel-reported state: capabilities,
session and process group, start time, executable inode), :mod:`.fd` (and fs.path),
:mod:`.user` (and group), :mod:`.container` (and k8s), :mod:`.http` (L7 exchanges).  :mod:`.base` holds the
registry, lookup, transformers and rendering; :mod:`.kinds` the Falco event
types of each vigil kind.

Importing this package registers every field.
"""
from vigil.rules.fields import container, evt, fd, http, proc, proc_state, user  # noqa: F401  (register the fields)
from vigil.rules.fields.base import (FIELDS, TRANSFORMS, BadFieldArg, Extractor, FieldDef, UnknownField,
                                     all_field_names, json_value, known, lookup, parse_ip, render_value,
                                     transform)
from vigil.rules.fields.evt import evt_type
from vigil.rules.fields.descriptions import listing as field_listing
from vigil.rules.fields.flags import O_FLAGS, PTRACE_REQUESTS, render_open_flags
from vigil.rules.fields.kinds import (CATEGORY, KIND_DIRS, KIND_TYPE_SETS, KIND_TYPES, PRODUCED_TYPES,
                                      RULE_KINDS, TYPE_TO_KIND)

__all__ = ["FIELDS", "TRANSFORMS", "BadFieldArg", "Extractor", "FieldDef", "UnknownField",
           "all_field_names", "field_listing", "json_value", "known", "lookup", "parse_ip", "render_value", "transform",
           "evt_type", "O_FLAGS", "PTRACE_REQUESTS", "render_open_flags", "CATEGORY", "KIND_DIRS",
           "KIND_TYPE_SETS", "KIND_TYPES", "PRODUCED_TYPES", "RULE_KINDS", "TYPE_TO_KIND"]
