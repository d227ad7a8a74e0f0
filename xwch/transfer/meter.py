"""What a party's transfers did since its last report, for the communication manager.

Every packet is recorded against its peer (a warehouse URL, or "clients" for a warehouse's
side): bytes each way, seconds in flight, its delay. :meth:`TransferMeter.take_report` hands
the counters over (a Work Alive, a heartbeat) and starts afresh, with the host's interface
counters over the same period so the coordinator can tell XWCH's traffic from everyone else's.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import psutil
from twisted.internet.interfaces import IReactorTime

from xwch.protocol.wire import MAX_REPORTED_PEERS
from xwch.protocol.worker import InterfaceTraffic, PeerTraffic, TransfersReport

# (bytes sent, bytes received) by the host's interfaces since boot, or None if unknown.
InterfaceCounters = Callable[[], "tuple[int, int] | None"]

# Where peers beyond MAX_REPORTED_PEERS are counted.
OTHER_PEERS = "other"


def host_interface_counters() -> tuple[int, int] | None:
    """Bytes sent and received by the host's network interfaces (see :func:`counted_interfaces`)."""
    try:
        nics = psutil.net_io_counters(pernic=True)
    except (OSError, RuntimeError):
        return None
    sent = received = 0
    for name in counted_interfaces(list(nics), has_device):
        sent += nics[name].bytes_sent
        received += nics[name].bytes_recv
    return sent, received


def counted_interfaces(names: Sequence[str], physical: Callable[[str], bool]) -> list[str]:
    """The interfaces whose bytes reach a link: the physical ones, or all but loopback when the
    host has none (a container, a network namespace).

    Loopback carries traffic between processes of one machine, which shares no link with
    anyone. Virtual interfaces beside physical ones (a VPN's tunnel, a bridge and the veths of
    containers) carry bytes that a physical interface carries too: counted twice, a volunteer's
    own traffic through a VPN would read as someone else's.
    """
    names = [name for name in names if not name.startswith("lo")]
    return [name for name in names if physical(name)] or names


@functools.lru_cache(maxsize=64)
def has_device(name: str) -> bool:
    """Whether interface ``name`` is backed by a device (Linux's sysfs; elsewhere, taken so)."""
    if not os.path.isdir("/sys/class/net"):
        return True
    return os.path.exists(f"/sys/class/net/{name}/device")


def is_loopback_url(url: str) -> bool:
    """Traffic to this URL stays on the machine (and off its interfaces' counters)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Counters:
    sent: int = 0
    received: int = 0
    busy: float = 0.0
    packets: int = 0
    min_rtt: float = math.inf
    rtt_sum: float = 0.0
    rtts: int = 0

    def traffic(self) -> PeerTraffic:
        return PeerTraffic(
            sent=self.sent,
            received=self.received,
            busy=round(self.busy, 6),
            packets=self.packets,
            min_rtt=None if self.rtts == 0 else round(self.min_rtt, 6),
            avg_rtt=None if self.rtts == 0 else round(self.rtt_sum / self.rtts, 6),
        )


class TransferMeter:
    """Counts packets per peer between two reports."""

    def __init__(
        self,
        reactor: IReactorTime,
        interface: InterfaceCounters | None = host_interface_counters,
    ) -> None:
        self._reactor = reactor
        self._interface = interface
        self._peers: dict[str, _Counters] = {}
        self._since = reactor.seconds()
        self._interface_then = interface() if interface is not None else None
        # Totals since the meter was made, for whoever watches a transfer (benchmarks, status).
        self.total_sent = 0
        self.total_received = 0
        # XWCH's bytes over the interfaces (loopback peers excluded) as they leave and arrive,
        # for telling others' traffic from XWCH's (:class:`~xwch.transfer.others.OtherTraffic`).
        self._wire = [0, 0]
        self._unsent = 0
        self._loopback: dict[str, bool] = {}

    def wire_bytes(self) -> tuple[int, int]:
        """XWCH's bytes sent and received over the interfaces so far, loopback excluded."""
        return self._wire[0], self._wire[1]

    def unsent_bytes(self) -> int:
        """Bytes of packets being sent (handed to a socket, not yet known to have left): some
        may already be on the wire, uncounted by :meth:`wire_bytes`."""
        return self._unsent

    def on_wire(self, peer: str, sent: int, received: int) -> None:
        """Bytes that just left for ``peer`` or came from it (a piece of a packet, counted as
        it comes off the socket, so the count keeps pace with the interface's)."""
        if not self._is_loopback(peer):
            self._wire[0] += sent
            self._wire[1] += received

    def sending(self, peer: str, size: int) -> None:
        """A packet of ``size`` bytes handed to the socket for ``peer``, whose bytes leave as
        the link takes them; :meth:`on_wire` counts them once it is answered."""
        if not self._is_loopback(peer):
            self._unsent += size

    def sent(self, peer: str, size: int) -> None:
        """The packet of :meth:`sending` is answered (or failed): its bytes have left."""
        if not self._is_loopback(peer):
            self._unsent = max(0, self._unsent - size)
            self._wire[0] += size

    def _is_loopback(self, peer: str) -> bool:
        loopback = self._loopback.get(peer)
        if loopback is None:
            if len(self._loopback) >= MAX_REPORTED_PEERS:
                self._loopback.clear()
            loopback = self._loopback[peer] = is_loopback_url(peer)
        return loopback

    def record(
        self, peer: str, sent: int, received: int, duration: float, rtt: float | None
    ) -> None:
        """One packet (or request) with ``peer``."""
        counters = self._peers.get(peer)
        if counters is None:
            if len(self._peers) >= MAX_REPORTED_PEERS - 1 and peer != OTHER_PEERS:
                peer = OTHER_PEERS
            counters = self._peers.setdefault(peer, _Counters())
        counters.sent += sent
        counters.received += received
        counters.busy += max(0.0, duration)
        counters.packets += 1
        if rtt is not None:
            counters.min_rtt = min(counters.min_rtt, rtt)
            counters.rtt_sum += rtt
            counters.rtts += 1
        self.total_sent += sent
        self.total_received += received

    def take_report(self) -> TransfersReport:
        """The counters since the last report; counting starts afresh."""
        now = self._reactor.seconds()
        peers = {peer: c.traffic() for peer, c in sorted(self._peers.items())}
        interface = None
        if self._interface is not None:
            current = self._interface()
            if current is not None and self._interface_then is not None:
                # Counters wrap or reset (an interface going away): never report a negative.
                interface = InterfaceTraffic(
                    sent=max(0, current[0] - self._interface_then[0]),
                    received=max(0, current[1] - self._interface_then[1]),
                )
            self._interface_then = current
        report = TransfersReport(
            seconds=round(max(0.0, now - self._since), 6),
            peers=peers,
            interface=interface,
        )
        self._peers = {}
        self._since = now
        return report


@runtime_checkable
class TransferReporter(Protocol):
    """What hands over a transfers report (a :class:`~xwch.transfer.pacing.PacketPacer`)."""

    def transfer_report(self) -> TransfersReport: ...
