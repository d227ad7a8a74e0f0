"""XWCH: bandwidth-aware volunteer computing."""

__version__ = "0.1.0"
