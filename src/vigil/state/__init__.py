"""What vigil knows about the node between events: processes and containers."""
