"""Finding the nearest warehouse's site by timing TCP handshakes, on loopback."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from xwch.protocol.codec import ProtocolError, convert
from xwch.protocol.worker import HostFacts
from xwch.worker.sites import tcp_round_trip


class RoundTripTests(TestCase):
    async def test_a_listening_warehouse_answers_in_a_round_trip(self) -> None:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        measure = tcp_round_trip(IReactorTCP(reactor), IReactorTime(reactor))
        seconds = await measure(f"http://127.0.0.1:{port.getHost().port}")  # type: ignore[attr-defined]
        self.assertGreaterEqual(seconds, 0.0)
        self.assertLess(seconds, 5.0)

    async def test_a_closed_port_fails(self) -> None:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(Factory.forProtocol(Protocol))
        number = port.getHost().port  # type: ignore[attr-defined]
        await port.stopListening()
        measure = tcp_round_trip(IReactorTCP(reactor), IReactorTime(reactor))
        with self.assertRaises(ConnectionRefusedError):
            await measure(f"http://127.0.0.1:{number}")


def _facts(cached: object) -> dict[str, object]:
    doc = HostFacts("h", "127.0.0.1", "linux", 1, 1, 1, 1.0).to_json()
    doc["cached"] = cached
    return doc


def test_cache_reports_are_checked() -> None:
    assert convert(_facts(["ab" * 8]), HostFacts, "register").cached == ("ab" * 8,)
    for bad, why in [
        ("abc", "register.cached: expected `array`"),
        (["AB" * 8], "register.cached[0]"),
        (["ab"], "register.cached[0]"),
        ([7], "register.cached[0]"),
    ]:
        try:
            convert(_facts(bad), HostFacts, "register")
        except ProtocolError as e:
            assert why in str(e)
        else:
            raise AssertionError(f"{bad!r} was accepted")
