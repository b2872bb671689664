"""Prometheus metrics: home for the observability issues."""
