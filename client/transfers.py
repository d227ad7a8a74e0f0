"""The client's seam to the transfer stack: hashing, bundles, pacing, uploads, downloads.

The client needs five functions of ``xwch.transfer`` and ``xwch.bundle``; gathering them in one
value lets the tests run ``submit`` and ``results`` against an in-memory warehouse, and keeps the
commands that only read tables (``list``, ``tasks`` ...) from importing the transfer stack at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from xwch.protocol.objects import Source
from xwch.protocol.worker import Policy

# Transfers at least this big get a line before and after: smaller ones take a blink.
BIG_TRANSFER = 8 * 1024 * 1024

# Where the client tells the user what it is doing: a line of text, on standard error.
Progress = Callable[[str], None]


class UploadFile(Protocol):
    """``xwch.transfer.upload.upload_file``."""

    def __call__(
        self,
        http: Any,
        url: str,
        digest: str,
        size: int,
        path: Path,
        capability: str,
        pacer: Any,
        reactor: Any,
        /,
    ) -> Awaitable[None]: ...


class DownloadObject(Protocol):
    """``xwch.transfer.download.download_object``."""

    def __call__(
        self,
        http: Any,
        sources: Sequence[Source],
        digest: str,
        size: int,
        dest: Path,
        pacer: Any,
        reactor: Any,
        /,
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Transfers:
    """How the client moves bytes; :func:`real_transfers` is the real thing."""

    hash_file: Callable[[Path], tuple[str, int]]
    pack_bundle: Callable[[Path, Path], None]
    upload_file: UploadFile
    download_object: DownloadObject
    # (reactor, policy) -> the pacer every transfer of one command shares.
    make_pacer: Callable[[IReactorTime, Policy], object]


def real_transfers() -> Transfers:
    """The transfer stack of ``xwch.transfer`` and ``xwch.bundle``."""
    # Imported here, not at the top: only submit and results need them.
    from xwch.bundle import pack_bundle
    from xwch.transfer.digest import sha256_file
    from xwch.transfer.download import download_object
    from xwch.transfer.pacing import PacketPacer
    from xwch.transfer.upload import upload_file

    def make_pacer(reactor: IReactorTime, policy: Policy) -> object:
        # The client's uploads and downloads make way for other programs' traffic too.
        return PacketPacer(policy, None, reactor, watch_others=True)

    return Transfers(
        hash_file=sha256_file,
        pack_bundle=pack_bundle,
        upload_file=upload_file,
        download_object=download_object,
        make_pacer=make_pacer,
    )
