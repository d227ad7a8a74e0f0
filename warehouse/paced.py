"""Reading request bodies no faster than the warehouse's download cap.

twisted.web hands a request's body to :meth:`Request.handleContentChunk` as it comes off the
socket. :class:`PacedRequest` reserves each chunk from the cap and, when the cap is ahead, stops
reading the socket until it has caught up: TCP's flow control then slows the sender down, so
the body arrives at the cap's rate whatever the sender's packet size.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.web.server import Request

from .traffic import WarehouseNetwork


class PacedRequest(Request):
    """A request whose body is read at most at the warehouse's download cap."""

    content_started: float | None = None
    _resume: IDelayedCall | None = None
    _body_done = False

    def _network(self) -> WarehouseNetwork | None:
        site = getattr(self.channel, "site", None)
        network = getattr(getattr(site, "resource", None), "network", None)
        return network if isinstance(network, WarehouseNetwork) else None

    def handleContentChunk(self, data: bytes) -> None:
        super().handleContentChunk(data)
        network = self._network()
        if network is None:
            return
        now = network.clock.seconds()
        if self.content_started is None:
            self.content_started = now
        bucket = network.download
        if bucket.rate is None:
            return
        delay = bucket.reserve(len(data), network.chunk_size(bucket))
        transport: Any = getattr(self.channel, "transport", None)
        if delay <= 0 or transport is None:
            return
        if self._resume is not None and self._resume.active():
            # Chunks already read arrive one after another: the wait is from the last of them.
            self._resume.reset(delay)
            return
        transport.pauseProducing()
        self._resume = network.clock.callLater(delay, self._read_again, transport)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The whole body is in: from here the channel decides when to read (the next request).
        # The channel has paused reading while it answers and resumes it when the answer is
        # done; the cap's debt carries over to the next body.
        self._body_done = True
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        super().requestReceived(command, path, version)

    def _read_again(self, transport: Any) -> None:
        self._resume = None
        if not self._body_done and getattr(transport, "connected", False):
            transport.resumeProducing()
