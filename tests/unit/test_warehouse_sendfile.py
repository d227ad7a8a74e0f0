"""Packets sent from the object's file (sendfile) over a real socket: whole, checked, in order,
and nothing left open when a client goes away in the middle."""

from __future__ import annotations

import hashlib
import os
import random
import socket
from pathlib import Path

import xxhash
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.fakes.warehouse import KEY, WAREHOUSE_ID
from xwch import capability
from xwch.http import make_http_client
from xwch.protocol.objects import Source
from xwch.protocol.wire import (
    ACCEPT_PACKET_CHECK_HEADER,
    CAPABILITY_HEADER,
    PACKET_CHECK_XXH3,
    PACKET_ENCODING_ZSTD,
    PACKET_XXH3_HEADER,
)
from xwch.protocol.worker import Policy
from xwch.transfer import PacketPacer, download_object
from xwch.transfer.exchange import exchange
from xwch.transfer.packet import PacketCompressor, decode_packet
from xwch.warehouse.blocking import run_inline
from xwch.warehouse.node import _QuietSite
from xwch.warehouse.objects import ObjectStore
from xwch.warehouse.routes import Registration, WarehouseResource
from xwch.warehouse.traffic import FIRST_PIECE, read_packet_thd

# Several packets, each well past the first piece sent through the transport.
PACKET = 5 * FIRST_PIECE + 17
DATA = random.Random(7).randbytes(4 * PACKET + 1234)
DIGEST = hashlib.sha256(DATA).hexdigest()


class _Catalog:
    def objects_stored(self, refs: object) -> object:
        return succeed(None)


def _sockets_and_objects() -> set[str]:
    """What this process holds open of sockets and stored objects."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own
        if target.startswith("socket:") or DIGEST in target:
            found.add(target)
    return found


class SendfileTests(TestCase):
    async def _serve(self) -> str:
        root = Path(self.mktemp())
        store = ObjectStore(root)
        store.write_packet(DIGEST, 0, DATA)
        store.commit(DIGEST)
        self.store = store
        clock = IReactorTime(reactor)
        resource = WarehouseResource(store, _Catalog(), clock, run_inline)  # type: ignore[arg-type]
        resource.registration = Registration(WAREHOUSE_ID, KEY, 30.0)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(_QuietSite(resource))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.port}"

    def _capability(self) -> str:
        return capability.issue(KEY, capability.OP_GET, DIGEST, WAREHOUSE_ID, 2e9)

    async def test_a_download_sent_from_the_file_is_whole(self) -> None:
        """Packets answered by sendfile make the object's exact bytes, each with the XXH3-64 of
        its bytes, on one kept-alive connection."""
        url = await self._serve()
        http = make_http_client(IReactorTCP(reactor))
        assert http.pool is not None
        self.addCleanup(http.pool.closeCachedConnections)
        answer = await exchange(
            http,
            "GET",
            f"{url}/objects/{DIGEST}",
            IReactorTime(reactor),
            {
                CAPABILITY_HEADER.encode(): self._capability().encode(),
                ACCEPT_PACKET_CHECK_HEADER.encode(): PACKET_CHECK_XXH3.encode(),
                b"range": f"bytes=100-{100 + PACKET - 1}".encode(),
            },
            chunked=True,
        )
        self.assertEqual((answer.code, answer.body), (206, DATA[100 : 100 + PACKET]))
        self.assertEqual(
            answer.header(PACKET_XXH3_HEADER), f"{xxhash.xxh3_64_intdigest(answer.body):016x}"
        )
        dest = Path(self.mktemp())
        pacer = PacketPacer(
            Policy(packet_size=PACKET, max_transfers=4), None, reactor, interface=None
        )
        source = Source(url, self._capability())
        await download_object(http, [source], DIGEST, len(DATA), dest, pacer, reactor)
        self.assertEqual(dest.read_bytes(), DATA)

    async def test_a_client_gone_mid_packet_leaves_nothing_open(self) -> None:
        """A client that reads a little of a big packet and hangs up: the warehouse closes the
        file and the socket it was sending from, and serves the next client as well."""
        await self._serve()
        before = _sockets_and_objects()
        request = (
            f"GET /objects/{DIGEST} HTTP/1.1\r\nHost: x\r\n"
            f"{CAPABILITY_HEADER}: {self._capability()}\r\n"
            f"Range: bytes=0-{len(DATA) - 1}\r\n\r\n"
        ).encode()
        client = socket.create_connection(("127.0.0.1", self.port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(request)
        client.setblocking(False)
        got = b""
        for _ in range(200):
            await deferLater(reactor, 0.005)
            try:
                got += client.recv(65536)
            except BlockingIOError:
                pass
            if len(got) > FIRST_PIECE:
                break
        self.assertTrue(got.startswith(b"HTTP/1.1 206"))
        client.close()
        for _ in range(200):
            await deferLater(reactor, 0.01)
            if _sockets_and_objects() <= before:
                break
        self.assertLessEqual(_sockets_and_objects(), before)
        http = make_http_client(IReactorTCP(reactor))
        assert http.pool is not None
        self.addCleanup(http.pool.closeCachedConnections)
        dest = Path(self.mktemp())
        pacer = PacketPacer(
            Policy(packet_size=PACKET, max_transfers=4), None, reactor, interface=None
        )
        source = Source(f"http://127.0.0.1:{self.port}", self._capability())
        await download_object(http, [source], DIGEST, len(DATA), dest, pacer, reactor)
        self.assertEqual(dest.read_bytes(), DATA)


def test_a_packet_read_for_sendfile_keeps_its_rest_in_the_file(tmp_path: Path) -> None:
    """Read for sendfile, a packet is its first piece in memory and the rest left in the open
    file, checked over all its bytes; releasing the answer closes the file."""
    store = ObjectStore(tmp_path)
    store.write_packet(DIGEST, 0, DATA)
    store.commit(DIGEST)
    answer = read_packet_thd(store, DIGEST, 5, PACKET, None, PACKET_XXH3_HEADER, from_file=True)
    self_check = f"{xxhash.xxh3_64_intdigest(DATA[5 : 5 + PACKET]):016x}"
    assert answer.check == self_check and answer.raw_size == PACKET
    assert list(answer.body) == [DATA[5 : 5 + FIRST_PIECE]]
    assert answer.rest is not None
    assert (answer.rest.offset, answer.rest.length) == (5 + FIRST_PIECE, PACKET - FIRST_PIECE)
    answer.release()
    assert answer.rest.file.closed
    # A packet that fits in the first piece is read whole, as ever.
    small = read_packet_thd(store, DIGEST, 0, 1000, None, PACKET_XXH3_HEADER, from_file=True)
    assert small.rest is None and list(small.body) == [DATA[:1000]]


def test_a_packet_that_compresses_is_sent_compressed_not_from_the_file(tmp_path: Path) -> None:
    """A probe of a compressible object compresses the mapped bytes: the answer is the zstd
    body, checked over the raw bytes, and nothing is left open."""
    text = b"the same line again and again\n" * (PACKET // 30 + 1)
    digest = hashlib.sha256(text).hexdigest()
    store = ObjectStore(tmp_path)
    store.write_packet(digest, 0, text)
    store.commit(digest)
    answer = read_packet_thd(
        store, digest, 0, PACKET, PacketCompressor(), PACKET_XXH3_HEADER, from_file=True
    )
    assert answer.encoding == PACKET_ENCODING_ZSTD and answer.rest is None
    assert decode_packet(b"".join(answer.body), answer.encoding, PACKET) == text[:PACKET]
    assert answer.check == f"{xxhash.xxh3_64_intdigest(text[:PACKET]):016x}"
