"""XWCH: bandwidth-aware volunteer computing."""

from __future__ import annotations

import argparse

__version__ = "0.1.0"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and XWCH's release, on every command."""
    parser.add_argument(
        "--version", action="version", version=f"{parser.prog} (XWCH) {__version__}"
    )
