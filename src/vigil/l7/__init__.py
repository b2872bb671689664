"""L7 (application protocol) observation: requests paired with their responses on
the TCP connections the agent tracks, from syscall data (and TLS uprobes).

``record.L7Request`` is what every consumer gets: the L7 metrics, the service
map and the ``http`` event kind for rules.
"""
