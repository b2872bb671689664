"""Container and Kubernetes identity for events (cgroup -> container -> pod)."""
