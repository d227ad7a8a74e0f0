"""An answer held in memory goes out piece by piece, each piece handed over whole."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from xwch.warehouse.pieces import PiecesProducer


class PausingRequest:
    """A request whose connection says "pause" after each write, as a TCP transport does once
    its buffer is past its limit; ``resume`` is the transport having sent everything."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self.finish_notices: list[Deferred[None]] = []

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.finish_notices.append(d)
        return d

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished
        self.written.append(data)
        self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True

    def resume(self) -> None:
        self.producer.resumeProducing()


HEAD = b"h" * 10
BODY = bytes(range(256)) * 100


def test_each_piece_goes_when_the_connection_has_sent_the_last_one() -> None:
    """The first piece goes at once; the next, the very bytes object given (never a copy),
    only when the connection asks for more; the answer ends after the last."""
    request = PausingRequest()
    PiecesProducer(request, [HEAD, BODY]).start()  # type: ignore[arg-type]
    assert request.written == [HEAD] and not request.finished
    request.resume()
    assert request.written[1] is BODY
    assert request.finished and request.producer is None


def test_a_client_gone_gets_no_more_pieces() -> None:
    """A connection lost in the middle: the rest of the answer is dropped, never written."""
    request = PausingRequest()
    PiecesProducer(request, [HEAD, BODY]).start()  # type: ignore[arg-type]
    for notice in request.finish_notices:
        notice.errback(ConnectionError("gone"))
    request.producer.resumeProducing()
    assert request.written == [HEAD] and not request.finished
