"""The xwch-client command and the small Python API behind it."""
