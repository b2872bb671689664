"""Enforcement in the kernel (policies, verdicts): home for the enforcement issue."""
