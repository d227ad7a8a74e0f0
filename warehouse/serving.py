"""Answering a packet: one ranged GET, read off the disk in a thread, checksummed, maybe
compressed, and written out at the warehouse's upload cap.

A whole-object GET (no Range, or one larger than a packet) is streamed instead, paced the same
way, without a checksum: it is for plain HTTP clients, who check the object's SHA-256.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from xwch.protocol.wire import (
    ACCEPT_PACKET_CHECK_HEADER,
    ACCEPT_PACKET_ENCODING_HEADER,
    PACKET_CHECK_XXH3,
    PACKET_CRC_HEADER,
    PACKET_ENCODING_HEADER,
    PACKET_ENCODING_ZSTD,
    PACKET_XXH3_HEADER,
)

from .answers import Refusal, Responder, header_text, refusal_body
from .blocking import BlockingRunner
from .objects import ObjectStore
from .pieces import PiecesProducer
from .sendfile import SendfileProducer, can_sendfile
from .streaming import FileSpanProducer
from .traffic import CLIENTS, PacketAnswer, WarehouseNetwork, read_packet_thd

log = Logger()


def _offers(request: Request, header: str, value: str) -> bool:
    offered = header_text(request, header) or ""
    return value in (e.strip().lower() for e in offered.split(","))


def accepts_zstd(request: Request) -> bool:
    return _offers(request, ACCEPT_PACKET_ENCODING_HEADER, PACKET_ENCODING_ZSTD)


def check_header(request: Request) -> str:
    """The header of the packet checksum to answer with: XXH3-64 if offered, else CRC-32."""
    if _offers(request, ACCEPT_PACKET_CHECK_HEADER, PACKET_CHECK_XXH3):
        return PACKET_XXH3_HEADER
    return PACKET_CRC_HEADER


def serve_packet(
    request: Request,
    store: ObjectStore,
    blocking: BlockingRunner,
    network: WarehouseNetwork,
    digest: str,
    first: int,
    length: int,
    size: int,
    done: Callable[[], None],
) -> int:
    """Answer bytes ``first``.. of ``digest`` (headers for a 206 already set); ``done`` at the end."""
    started = network.clock.seconds()
    zstd = accepts_zstd(request)
    check = check_header(request)
    compressor = network.compression.for_object(digest) if zstd else None
    # Uncapped on a plain TCP connection, a packet goes from the file to the socket (sendfile).
    from_file = network.upload.rate is None and can_sendfile(request)

    def read(at: int, n: int) -> Deferred[PacketAnswer]:
        ready = network.read_ahead.take((digest, at, n, zstd, check, from_file))
        if ready is not None:
            return ready
        return blocking(read_packet_thd, store, digest, at, n, compressor, check, from_file)

    d = read(first, length)
    following = first + length
    if following < size and length <= network.read_ahead.LARGEST:
        # The downloader's next question is, most likely, the next packet of the same size.
        key = (digest, following, min(length, size - following), zstd, check, from_file)
        network.read_ahead.put(key, read(following, key[2]))
    gone = False

    def lost(_: object) -> None:
        nonlocal gone
        gone = True

    request.notifyFinish().addErrback(lost)

    def send(answer: PacketAnswer) -> None:
        if gone:
            answer.release()
            return  # the client went away meanwhile
        request.setHeader(answer.check_header.encode("ascii"), answer.check.encode("ascii"))
        if answer.encoding is not None:
            request.setHeader(
                PACKET_ENCODING_HEADER.encode("ascii"), answer.encoding.encode("ascii")
            )
        sent = sum(len(piece) for piece in answer.body)
        if answer.rest is not None:
            sent += answer.rest.length
        request.setHeader(b"content-length", str(sent).encode("ascii"))

        def served(_: object) -> None:
            duration = network.clock.seconds() - started
            network.meter.record(CLIENTS, sent, 0, duration, None)
            done()

        # Errback: the client went away in the middle; the session just idles out.
        request.notifyFinish().addCallbacks(served, lambda _: None)
        rest = answer.rest
        if network.upload.rate is None:
            if rest is not None:
                SendfileProducer(request, answer.body, rest).start()
                return
            # In memory already, and no cap to keep to: the transport sends it as fast as the
            # client takes it (and stops reading requests meanwhile), each piece uncopied.
            PiecesProducer(request, answer.body).start()
            return
        if rest is not None:
            # A cap set since the packet was read: the raw packet, streamed from its file.
            head = sum(len(piece) for piece in answer.body)
            stream(request, network, rest.file, rest.offset - head, sent)
            return
        stream(request, network, io.BytesIO(b"".join(answer.body)), 0, sent)

    def failed(failure: Failure) -> None:
        if failure.check(FileNotFoundError):
            body = refusal_body(request, Refusal(404, "not_found", f"object {digest} is gone"))
        else:
            log.failure("reading a packet of {digest} failed", failure, digest=digest)
            body = refusal_body(request, Refusal(500, "internal", "the warehouse failed"))
        Responder(request).send(body)

    d.addCallbacks(send, failed)
    return NOT_DONE_YET


def stream(request: Request, network: WarehouseNetwork, f: Any, offset: int, length: int) -> None:
    """Write ``length`` bytes of ``f`` from ``offset``, as fast as the upload cap allows."""
    bucket = network.upload
    FileSpanProducer(
        request,
        f,
        offset,
        length,
        bucket=bucket if bucket.rate is not None else None,
        clock=network.clock,
        chunk_size=network.chunk_size(bucket),
    ).start()
