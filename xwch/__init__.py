"""XWCH: bandwidth-aware volunteer computing."""
