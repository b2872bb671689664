"""The kernel's open filter as user space writes it: the open-mode bits an
``open_prefixes`` entry holds, and the entries for a set of prefixes.

These constants are the one Python definition of the bits (the rules compiler's
OPEN_READ / OPEN_WRITE / OPEN_ANY are the same values).
"""
from __future__ import annotations

from vigil.events.structs import PREFIX_LEN

# enum open_want in kernel/bpf/events.h (tests/test_kinds.py checks the two agree):
# what an open_prefixes entry wants below its prefix.
OPEN_WANT_READ = 1     # O_RDONLY / O_RDWR opens
OPEN_WANT_WRITE = 2    # O_WRONLY / O_RDWR opens, and any with O_CREAT or O_TRUNC
OPEN_WANT_ALL = OPEN_WANT_READ | OPEN_WANT_WRITE


def open_filter_entries(prefixes) -> dict:
    """open_prefixes map entries (key bytes -> mask) for a prefix list or
    prefix -> mask dict.  The trie answers with the longest matching prefix
    only, so each entry carries the modes of the prefixes covering it.  The
    kernel compares at most PREFIX_LEN - 1 bytes of a path: longer prefixes
    are cut (which only widens them)."""
    items = prefixes.items() if isinstance(prefixes, dict) else \
        ((p, OPEN_WANT_ALL) for p in prefixes)
    own = {}
    for p, mask in items:
        mask = int(mask) & OPEN_WANT_ALL
        if not mask:
            continue
        b = (p.encode() if isinstance(p, str) else bytes(p))[:PREFIX_LEN - 1]
        own[b] = own.get(b, 0) | mask
    out = {}
    stack = []     # covering prefixes of the current one, with their masks
    for b in sorted(own):
        while stack and not b.startswith(stack[-1][0]):
            stack.pop()
        mask = own[b] | (stack[-1][1] if stack else 0)
        if stack and mask == stack[-1][1]:
            continue   # the covering entry answers the same
        stack.append((b, mask))
        out[b] = mask
    return out
