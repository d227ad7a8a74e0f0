"""Send the rest of a packet straight from the object's file to the socket, with ``sendfile``.

Read into memory and written out, every byte of a packet costs the warehouse two copies (page
cache to a bytes object, that object to the socket), the most of its CPU on a fast link; with
``sendfile`` the kernel hands the page cache's own pages to the socket. The packet's checksum is
still of the very bytes sent: the object never changes, and the read thread computed it over
the same pages, mapped (see :func:`~.network.read_packet_thd`).

Twisted's transports only write bytes, so the answer is written in two steps: the headers and
a first piece go through the transport as usual, sized so that the transport says "pause"
(see :class:`~.pieces.PiecesProducer`); when it has sent them all and asks for more, the rest
goes out by ``sendfile`` on a duplicate of the socket's descriptor, each call when the reactor
says the socket can take more. The transport writes nothing meanwhile (the request is its
producer), and the duplicate keeps the socket ours even if the transport closes its own
descriptor: ``sendfile`` then fails, never writes into another connection.

Only for a plain TCP connection (TLS must encrypt the bytes) and no upload cap (which wants
the bytes chunk by chunk).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from twisted.internet import tcp
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, IReactorFDSet, IWriteDescriptor
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer


@dataclass(frozen=True)
class FileSpan:
    """``length`` bytes of an open object file from ``offset``, to be sent from the file."""

    file: BinaryIO
    offset: int
    length: int

    def close(self) -> None:
        self.file.close()


def can_sendfile(request: Request) -> bool:
    """Whether the request came on a plain TCP connection, whose socket takes ``sendfile``."""
    channel = request.channel
    transport = getattr(channel, "transport", None)
    return isinstance(transport, tcp.Server) and IReactorFDSet.providedBy(transport.reactor)


@implementer(IWriteDescriptor)
class _SocketFeeder:
    """Sends a :class:`FileSpan` to a socket, one ``sendfile`` each time it can take more."""

    def __init__(
        self,
        reactor: IReactorFDSet,
        fd: int,
        span: FileSpan,
        done: Callable[[BaseException | None], None],
    ) -> None:
        self._reactor = reactor
        self._fd = fd
        self._file_fd = span.file.fileno()
        self._offset = span.offset
        self._remaining = span.length
        self._done: Callable[[BaseException | None], None] | None = done

    def start(self) -> None:
        self._reactor.addWriter(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "SocketFeeder"

    def doWrite(self) -> None:
        try:
            sent = os.sendfile(self._fd, self._file_fd, self._offset, self._remaining)
        except BlockingIOError:
            return
        except OSError as e:
            # The client went away (EPIPE, ECONNRESET), or the disk failed.
            self._end(e)
            return
        if sent == 0:
            # The file is shorter than promised: objects never change, so the disk failed.
            self._end(ConnectionLost("the object's file ended before the packet"))
            return
        self._offset += sent
        self._remaining -= sent
        if self._remaining == 0:
            self._end(None)
        return None

    def connectionLost(self, reason: Failure) -> None:
        # Called by the reactor once it has dropped us (the socket hung up).
        self._end(reason.value if isinstance(reason.value, BaseException) else None)

    def stop(self) -> None:
        """Give up (the request is gone): nothing more is sent."""
        self._end(ConnectionLost("the request went away"))

    def _end(self, error: BaseException | None) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        self._reactor.removeWriter(self)
        os.close(self._fd)
        done(error)


@implementer(IPushProducer)
class SendfileProducer:
    """Writes ``head`` through the transport, then ``rest`` by ``sendfile``; then finishes.

    ``head`` must fill the transport's buffer (the transport then says "pause", and "resume"
    once it has sent everything): only then is the socket free for ``sendfile``.
    """

    def __init__(self, request: Request, head: Sequence[bytes], rest: FileSpan) -> None:
        self._request: Request | None = request
        self._head = list(head)
        self._rest = rest
        self._paused = False
        self._feeder: _SocketFeeder | None = None
        self._wrote_head = False

    def start(self) -> None:
        request = self._request
        assert request is not None
        request.notifyFinish().addErrback(self._lost)
        request.registerProducer(self, True)
        for piece in self._head:
            request.write(piece)
        self._wrote_head = True
        if not self._paused and self._request is not None:
            # The transport's buffer was not filled (it holds more than this transport's
            # default): the socket is not known to be free, so the rest goes the plain way.
            self._write_rest_plainly()

    def _lost(self, reason: Failure) -> None:
        self.stopProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        request = self._request
        if request is None or not self._wrote_head or self._feeder is not None:
            return
        # Everything written so far is sent: the socket is ours until the request finishes.
        transport = request.channel.transport  # type: ignore[union-attr]
        assert isinstance(transport, tcp.Server)
        reactor = transport.reactor
        assert IReactorFDSet.providedBy(reactor)
        self._feeder = _SocketFeeder(
            reactor,  # type: ignore[arg-type]
            os.dup(transport.fileno()),
            self._rest,
            self._sent,
        )
        self._feeder.start()

    def _sent(self, error: BaseException | None) -> None:
        self._rest.close()
        request, self._request = self._request, None
        if request is None:
            return
        if error is not None:
            # The client sees a body cut short and asks for the packet again.
            assert request.channel is not None
            request.channel.loseConnection()
            return
        request.unregisterProducer()
        request.finish()

    def _write_rest_plainly(self) -> None:
        request, self._request = self._request, None
        assert request is not None
        rest = self._rest
        try:
            data = os.pread(rest.file.fileno(), rest.length, rest.offset)
        finally:
            rest.close()
        if len(data) != rest.length:
            # The file is shorter than promised: cut the answer short, the client asks again.
            assert request.channel is not None
            request.channel.loseConnection()
            return
        request.write(data)
        request.unregisterProducer()
        request.finish()

    def stopProducing(self) -> None:
        self._request = None
        feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.stop()
        else:
            self._rest.close()
