"""Copies between warehouses: the coordinator asks a warehouse to fetch an object from others.

``POST /objects/{digest}/fetch`` (put capability for this warehouse) with
``{"size": n, "sources": [Source...]}`` answers at once: 200 ``{"stored": true}`` when the object
is already here, else 202 ``{"fetching": true}``. The copy runs in the background, paced like
every transfer, verified by digest, and is reported to the coordinator's catalog when stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.protocol.objects import Source
from xwch.protocol.worker import Policy
from xwch.transfer import PacketPacer, download_object

from .objects import ObjectStore

log = Logger()

# (http, sources, digest, size, dest, pacer, reactor): xwch.transfer.download_object's shape.
Download = Callable[..., Awaitable[None]]
Report = Callable[[str, int], Awaitable[None]]


class Replicator:
    """Fetches objects from other warehouses into this one, one background copy per object."""

    def __init__(
        self,
        reactor: IReactorTime,
        store: ObjectStore,
        http: HTTPClient,
        report: Report,
        download: Download | None = None,
        pacer: PacketPacer | None = None,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._http = http
        self._report = report
        self._download = download or download_object
        # The warehouse's own pacer: copies keep its caps and the coordinator's policy.
        self._pacer = pacer or PacketPacer(Policy(), None, reactor)
        self.copying: dict[str, Deferred[None]] = {}

    def fetch(self, digest: str, size: int, sources: Sequence[Source]) -> bool:
        """Start copying ``digest`` here; False if it is already stored (nothing to do)."""
        if self._store.has(digest):
            return False
        if digest not in self.copying:
            d = Deferred.fromCoroutine(self._copy(digest, size, sources))
            self.copying[digest] = d

            def done(result: Failure | None) -> None:
                self.copying.pop(digest, None)
                if isinstance(result, Failure):
                    log.failure("copy of {digest} failed", result, digest=digest)

            d.addBoth(done)
        return True

    async def _copy(self, digest: str, size: int, sources: Sequence[Source]) -> None:
        dest = self._store.fetch_path(digest)
        await self._download(self._http, sources, digest, size, dest, self._pacer, self._reactor)
        stored = self._store.adopt(dest, digest)
        await self._report(digest, stored)
        log.info(
            "copied {digest} ({size} bytes) from another warehouse", digest=digest, size=stored
        )
