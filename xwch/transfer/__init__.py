"""Packet transfers used by every part: warehouse, worker and client.

Senders split an object into packets whose size and pacing come from the coordinator's policy,
the transfer's own delay-based control and any rate cap (:class:`PacketPacer`); a broken
transfer resumes at the first missing byte; a corrupted packet is sent again; every object is
checked against its SHA-256 name at the end.
"""

from __future__ import annotations

from xwch.transfer.copy import copy_object
from xwch.transfer.delay import DelayController
from xwch.transfer.digest import sha256_file
from xwch.transfer.download import download_object
from xwch.transfer.pacing import DOWNLOAD, UPLOAD, PacketPacer
from xwch.transfer.upload import upload_bytes, upload_file

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
