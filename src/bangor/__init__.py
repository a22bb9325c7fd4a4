"""Bangor: secure, low-latency voice and text chat for small groups."""

__version__ = "0.1.0"
