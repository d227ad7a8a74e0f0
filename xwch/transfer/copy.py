"""Warehouse to warehouse: pull an object from other warehouses, paced like every transfer.

A copy is a download whose destination is the pulling warehouse's incoming folder; it uses the
warehouse's own pacer, so its caps, the coordinator's policy and the delay-based control apply
as to any transfer, and the receiving warehouse then adopts the verified file as an object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch.protocol.objects import Source
from xwch.transfer.download import Downloader
from xwch.transfer.pacing import PacketPacer

log = Logger()


async def copy_object(
    http: HTTPClient,
    sources: Sequence[Source],
    digest: str,
    size: int,
    dest: Path,
    pacer: PacketPacer,
    reactor: IReactorTime,
    *,
    own_url: str | None = None,
) -> None:
    """Pull object ``digest`` of ``size`` bytes from ``sources`` into the file ``dest``.

    ``dest`` appears only complete and verified against ``digest`` (a broken copy resumes from
    ``<dest>.part``). ``own_url`` (the pulling warehouse's URL) is left out of the sources: a
    warehouse does not copy from itself. Raises like :func:`~xwch.transfer.download_object`.
    """
    own = own_url.rstrip("/") if own_url else None
    others = [s for s in sources if s.url.rstrip("/") != own]
    await Downloader(http, others, digest, size, dest, pacer, reactor).run()
    log.info("copied {digest} ({size} bytes) from another warehouse", digest=digest, size=size)
