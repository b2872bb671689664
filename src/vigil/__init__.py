"""vigil: eBPF runtime security and observability agent for Kubernetes nodes."""
__version__ = "0.1.0"
