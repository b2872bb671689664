"""L7 (application protocol) observation: requests paired with their responses on
the TCP connections the agent tracks, from syscall data (and TLS uprobes).

``record.L7Request`` is what every consumer gets: the L7 metrics, the service
map and the ``http`` event kind for rules.
"""

from vigil.l7.record import PROTOCOLS, L7Request, Sink  # noqa: E402


def wanted_protocols(cfg, rule_kinds=()) -> list:
    """The protocols the kernel detects: l7.protocols, and HTTP when a loaded
    rule needs the http event kind."""
    from vigil.events import Kind
    protos = list(cfg["l7"]["protocols"])
    if Kind.HTTP in rule_kinds and "http" not in protos:
        protos.append("http")
    return protos


def kernel_kinds(cfg, rule_kinds=()) -> set:
    """The kinds L7 needs from the kernel (none when it is off)."""
    from vigil.events import Kind
    return {Kind.L7} if wanted_protocols(cfg, rule_kinds) else set()


__all__ = ["PROTOCOLS", "L7Request", "Sink", "wanted_protocols", "kernel_kinds"]
