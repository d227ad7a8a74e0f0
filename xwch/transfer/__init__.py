"""Packet transfers used by every part: warehouse, worker and client.

Senders split an object into packets of the policy's size and pace them (:class:`PacketPacer`);
a broken transfer resumes at the first missing byte; every object is checked against its
SHA-256 name at the end.
"""

from __future__ import annotations

from xwch.transfer.digest import sha256_file
from xwch.transfer.download import download_object
from xwch.transfer.pacing import PacketPacer
from xwch.transfer.upload import upload_bytes, upload_file

__all__ = ["PacketPacer", "download_object", "sha256_file", "upload_bytes", "upload_file"]
