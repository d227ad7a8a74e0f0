"""Send an answer held in memory, piece by piece, each piece handed to the transport alone.

Twisted's TCP transport sends a bytes object written into its empty buffer as it is, but joins
(copies) whatever else is queued with it: written at once, the headers and an 8 MiB packet cost
a copy of the packet, the warehouse's largest cost after the kernel's own on a fast link. As a
push producer, :class:`PiecesProducer` writes the next piece only while the connection does not
say "pause": a first piece as large as the transport's buffer limit, written after the headers,
makes it pause; it resumes once everything is sent, and the large piece then goes alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer


@implementer(IPushProducer)
class PiecesProducer:
    """Writes ``pieces`` to ``request`` while it is not paused, then finishes it."""

    def __init__(self, request: Request, pieces: Sequence[bytes]) -> None:
        self._request: Request | None = request
        self._pieces = deque(pieces)
        self._paused = False
        self._producing = False

    def start(self) -> None:
        assert self._request is not None
        self._request.notifyFinish().addErrback(self._lost)
        self._request.registerProducer(self, True)
        self.resumeProducing()

    def _lost(self, reason: Failure) -> None:
        self.stopProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        # A write may call back into us (pause, stop); never loop twice at once.
        if self._producing:
            return
        self._producing = True
        try:
            while not self._paused and self._request is not None and self._pieces:
                self._request.write(self._pieces.popleft())
            if self._request is not None and not self._pieces:
                request, self._request = self._request, None
                request.unregisterProducer()
                request.finish()
        finally:
            self._producing = False

    def stopProducing(self) -> None:
        self._request = None
        self._pieces.clear()
