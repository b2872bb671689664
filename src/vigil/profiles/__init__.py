"""Behavioural profiles per workload: home for the profiles issue."""
