"""The kernel side: BPF sources (bpf/), the libbpf binding, sensor loading, the ring buffer."""
