"""Tests of the xwch-client command and its Python API."""
