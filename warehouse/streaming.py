"""Send part of a file as an HTTP answer, as fast as the client takes it, or as a cap allows.

A push producer: it writes until the connection says "pause" and resumes when told. Twisted's
static producers are pull producers, which twisted.web drives through the global cooperator;
this one needs nothing but the request (and a clock when it is paced), so it works the same on a
real socket and in memory. Under a cap (a :class:`~xwch.transfer.bucket.TokenBucket`) each chunk
waits until the cap has earned it: the answer leaves at the cap's rate, never in a burst.
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from xwch.transfer.bucket import TokenBucket

# What the reactor's transports buffer at a time: larger writes just queue up in memory.
CHUNK_SIZE = 64 * 1024


@implementer(IPushProducer)
class FileSpanProducer:
    """Writes ``length`` bytes of ``f`` from ``offset`` to ``request``, then finishes it."""

    def __init__(
        self,
        request: Request,
        f: BinaryIO,
        offset: int,
        length: int,
        *,
        bucket: TokenBucket | None = None,
        clock: IReactorTime | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if bucket is not None and clock is None:
            raise ValueError("a paced answer needs a clock")
        self._request: Request | None = request
        self._file = f
        self._offset = offset
        self._remaining = length
        self._paused = False
        self._producing = False
        self._bucket = bucket
        self._clock = clock
        self._chunk_size = chunk_size
        # A chunk read and reserved from the cap, waiting for its time.
        self._held: bytes | None = None
        self._timer: IDelayedCall | None = None

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
        if self._producing or self._timer is not None:
            return
        self._producing = True
        try:
            self._produce()
        finally:
            self._producing = False

    def _produce(self) -> None:
        while not self._paused and self._request is not None:
            data = self._held
            self._held = None
            if data is None:
                if self._remaining == 0:
                    break
                data = self._file.read(min(self._chunk_size, self._remaining))
                if not data:
                    # The file is shorter than promised: objects never change, so the disk
                    # failed. Cut the answer short; the client sees a broken body and retries.
                    assert self._request.channel is not None
                    self._request.channel.loseConnection()
                    self.stopProducing()
                    return
                self._remaining -= len(data)
                if self._bucket is not None:
                    delay = self._bucket.reserve(len(data), self._chunk_size)
                    if delay > 0:
                        assert self._clock is not None
                        self._held = data
                        self._timer = self._clock.callLater(delay, self._time_come)
                        return
            self._request.write(data)
        if self._request is not None and self._remaining == 0 and self._held is None:
            request, self._request = self._request, None
            request.unregisterProducer()
            request.finish()
            self._file.close()

    def _time_come(self) -> None:
        self._timer = None
        self.resumeProducing()

    def stopProducing(self) -> None:
        self._request = None
        self._held = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._file.close()
