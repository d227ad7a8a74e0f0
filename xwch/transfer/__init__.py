"""Packet transfers used by every part: warehouse, worker and client.

Senders split an object into packets whose size and pacing come from the coordinator's policy,
the transfer's own delay-based control and any rate cap (:class:`PacketPacer`); a broken
transfer resumes at the first missing byte; a corrupted packet is sent again; every object is
checked against its SHA-256 name at the end.

The names below are imported when first used (PEP 562): a command that only formats a rate
(``xwch-client network``) or only submits a job does not load the whole transfer stack and
psutil, some 20 ms of every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xwch.transfer.copy import copy_object
    from xwch.transfer.delay import DelayController
    from xwch.transfer.digest import sha256_file
    from xwch.transfer.download import download_object
    from xwch.transfer.pacing import DOWNLOAD, UPLOAD, PacketPacer
    from xwch.transfer.upload import upload_bytes, upload_file

# Each name, and the module that defines it.
_HOMES = {
    "DOWNLOAD": "xwch.transfer.pacing",
    "UPLOAD": "xwch.transfer.pacing",
    "DelayController": "xwch.transfer.delay",
    "PacketPacer": "xwch.transfer.pacing",
    "copy_object": "xwch.transfer.copy",
    "download_object": "xwch.transfer.download",
    "sha256_file": "xwch.transfer.digest",
    "upload_bytes": "xwch.transfer.upload",
    "upload_file": "xwch.transfer.upload",
}

__all__ = [
    "DOWNLOAD",
    "UPLOAD",
    "DelayController",
    "PacketPacer",
    "copy_object",
    "download_object",
    "sha256_file",
    "upload_bytes",
    "upload_file",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found directly from now on
    return value
