"""Alerts: the Alert record, rate limiting, the SQLite store and the outputs."""
