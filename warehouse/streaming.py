"""Send part of a file as an HTTP answer, as fast as the client takes it.

A push producer: it writes until the connection says "pause" and resumes when told. Twisted's
static producers are pull producers, which twisted.web drives through the global cooperator;
this one needs nothing but the request, so it works the same on a real socket and in memory.
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

# What the reactor's transports buffer at a time: larger writes just queue up in memory.
CHUNK_SIZE = 64 * 1024


@implementer(IPushProducer)
class FileSpanProducer:
    """Writes ``length`` bytes of ``f`` from ``offset`` to ``request``, then finishes it."""

    def __init__(self, request: Request, f: BinaryIO, offset: int, length: int) -> None:
        self._request: Request | None = request
        self._file = f
        self._offset = offset
        self._remaining = length
        self._paused = False
        self._producing = False

    def start(self) -> None:
        assert self._request is not None
        self._request.notifyFinish().addErrback(self._lost)
        self._file.seek(self._offset)
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
            while not self._paused and self._request is not None and self._remaining > 0:
                data = self._file.read(min(CHUNK_SIZE, self._remaining))
                if not data:
                    # The file is shorter than promised: objects never change, so the disk
                    # failed. Cut the answer short; the client sees a broken body and retries.
                    assert self._request.channel is not None
                    self._request.channel.loseConnection()
                    self.stopProducing()
                    return
                self._remaining -= len(data)
                self._request.write(data)
            if self._request is not None and self._remaining == 0:
                request, self._request = self._request, None
                request.unregisterProducer()
                request.finish()
                self._file.close()
        finally:
            self._producing = False

    def stopProducing(self) -> None:
        self._request = None
        self._file.close()
