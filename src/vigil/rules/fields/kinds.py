"""The Falco event types each vigil event kind stands for, and what follows
from that (the kind of an event type, the kinds rules can match, evt.dir,
evt.category), as the rules modules use them.  The facts live in the event-kind
registry (vigil.events.kinds); every rules module takes these names from here."""
from __future__ import annotations

from vigil.events import kinds as _registry

# The Falco event type names each vigil kind can stand for.  The first name is
# the default when the event does not say which syscall produced it.
KIND_TYPES = _registry.FALCO_TYPES
KIND_TYPE_SETS = {k: frozenset(v) for k, v in KIND_TYPES.items()}
TYPE_TO_KIND = _registry.TYPE_TO_KIND
PRODUCED_TYPES = _registry.PRODUCED_TYPES
RULE_KINDS = _registry.RULE_KINDS
# evt.dir: vigil events are complete syscalls; ptrace answers to both directions
KIND_DIRS = _registry.KIND_DIRS
CATEGORY = _registry.CATEGORIES
