"""Packet transfers used by every part: warehouse, worker and client."""
