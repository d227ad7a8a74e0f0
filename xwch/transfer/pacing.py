"""How long a sender waits before its next packet, and how big that packet is.

Four things pace a transfer, and the strictest wins:

- the communication manager's policy: a packet size and a sleep between two packets, which
  grows with the load it senses on the network;
- the transfer's own :class:`~xwch.transfer.delay.DelayController`, which reacts within a round
  trip to the queueing delay its packets meet;
- where the party watches its host (:meth:`PacketPacer.watch_host`), other programs' traffic on
  the host's interfaces (:class:`~xwch.transfer.others.OtherTraffic`), and where it watches
  its home router (:meth:`PacketPacer.watch_gateway`), other devices' traffic over the
  router's Internet side (:class:`~xwch.transfer.gateway.GatewayTraffic`): while either goes
  a transfer's way, the transfer makes way (its controller drops to its floor rate);
- the volunteer's or operator's caps on upload and download rates: token buckets that hold at
  most one packet (:class:`~xwch.transfer.bucket.TokenBucket`). Under a cap a packet is at most
  :attr:`PacketPacer.CAP_PACKET_TIME` of it, so the rate over any one-second window stays within
  a few percent of the cap: a 1 MiB packet under a 1 MiB/s cap would be a one-second burst.

One pacer serves all the transfers of one party (a worker, a client command, a warehouse's
copies): they share its caps, its limit on concurrent transfers and its meter.
"""

from __future__ import annotations

from typing import Literal

from twisted.internet.interfaces import IReactorTime

from xwch.protocol.worker import Policy, TransfersReport
from xwch.transfer.bucket import TokenBucket, check_rate
from xwch.transfer.delay import DelayController
from xwch.transfer.gateway import GatewayTraffic, RunBlocking
from xwch.transfer.meter import InterfaceCounters, TransferMeter, host_interface_counters
from xwch.transfer.others import OtherTraffic
from xwch.transfer.slots import TransferSlots

Direction = Literal["upload", "download"]
UPLOAD: Direction = "upload"
DOWNLOAD: Direction = "download"


class PacketPacer:
    """Tells each sender how big its next packet is and how long to wait before it."""

    # Under a cap, a packet is at most 1/40 s of it: one packet more or less in a one-second
    # window is 2.5%, inside the 5% the cap is held to.
    CAP_PACKET_TIME = 1 / 40
    # ... but never smaller than this (below it HTTP headers weigh more than 2% of the bytes).
    MIN_PACKET = 16 * 1024

    def __init__(
        self,
        policy: Policy,
        rate_cap: float | None,
        reactor: IReactorTime,
        *,
        upload_cap: float | None = None,
        download_cap: float | None = None,
        upload_bucket: TokenBucket | None = None,
        download_bucket: TokenBucket | None = None,
        interface: InterfaceCounters | None = host_interface_counters,
        watch_others: bool = False,
    ) -> None:
        """``rate_cap`` caps both directions; ``upload_cap``/``download_cap`` one each.

        ``upload_bucket``/``download_bucket`` share caps with other senders (a warehouse's
        copies and its answers). ``watch_others``: transfers make way while others' traffic
        shows on the ``interface`` counters (:class:`~xwch.transfer.others.OtherTraffic`); a
        party on a real host sets it, tests on a fake clock leave it (the host's counters are
        not theirs).
        """
        check_rate(rate_cap)
        self._policy = policy
        self._reactor = reactor
        if upload_cap is None:
            upload_cap = rate_cap
        if download_cap is None:
            download_cap = rate_cap
        self._upload = upload_bucket or TokenBucket(upload_cap, reactor)
        self._download = download_bucket or TokenBucket(download_cap, reactor)
        self._paced_one = False
        self.slots = TransferSlots(policy.max_transfers)
        self._interface = interface
        self.meter = TransferMeter(reactor, interface)
        self.others: OtherTraffic | None = None
        self.gateway: GatewayTraffic | None = None
        if watch_others:
            self.watch_host()

    def watch_host(self) -> None:
        """From the next packet on, transfers make way while others' traffic shows on the
        interface counters (none to watch without them)."""
        if self.others is None and self._interface is not None:
            self.others = OtherTraffic(
                self._reactor, self._interface, self.meter.wire_bytes, self.meter.unsent_bytes
            )

    def watch_gateway(self, run_blocking: RunBlocking) -> GatewayTraffic:
        """From the next packet on, transfers also make way while other devices' traffic
        shows on the home router's counters (found over UPnP when a transfer first asks;
        ``run_blocking`` runs the router's blocking calls off the reactor thread)."""
        if self.gateway is None:
            self.gateway = GatewayTraffic(
                self._reactor, self.meter.wire_bytes, run_blocking, unsent=self.meter.unsent_bytes
            )
        return self.gateway

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    def update(self, policy: Policy) -> None:
        """Apply a new policy from the coordinator, from the next packet on."""
        self._policy = policy
        self.slots.set_limit(policy.max_transfers)

    # Caps

    @property
    def rate_cap(self) -> float | None:
        """The stricter of the two caps (None when neither is set)."""
        caps = [c for c in (self.upload_cap, self.download_cap) if c is not None]
        return min(caps) if caps else None

    @property
    def upload_cap(self) -> float | None:
        return self._upload.rate

    @property
    def download_cap(self) -> float | None:
        return self._download.rate

    def set_rate_cap(self, rate_cap: float | None) -> None:
        """Cap both directions (bytes per second, None for none), from the next packet on."""
        check_rate(rate_cap)
        self.set_upload_cap(rate_cap)
        self.set_download_cap(rate_cap)

    def set_upload_cap(self, rate_cap: float | None) -> None:
        """Cap what this party sends (bytes per second, None for none)."""
        self._upload.set_rate(rate_cap)

    def set_download_cap(self, rate_cap: float | None) -> None:
        """Cap what this party receives (bytes per second, None for none)."""
        self._download.set_rate(rate_cap)

    # Packets

    def new_controller(self) -> DelayController:
        """A delay controller for one new transfer."""
        return DelayController(self._reactor)

    def packet_size(
        self, direction: Direction = DOWNLOAD, controller: DelayController | None = None
    ) -> int:
        """The size of the next packet: the policy's, smaller under a cap or a busy path."""
        size = self._policy.packet_size
        if controller is not None:
            self._watch_others(direction, controller)
            size = controller.packet_size(size)
        cap = self._bucket(direction).rate
        if cap is not None:
            size = min(size, max(self.MIN_PACKET, int(cap * self.CAP_PACKET_TIME)))
        return max(1, size)

    def delay_before(
        self,
        size: int,
        direction: Direction = DOWNLOAD,
        controller: DelayController | None = None,
    ) -> float:
        """Seconds to wait before sending a packet of ``size`` bytes, which it reserves."""
        # The sleep is between two packets: the first one does not wait for it.
        sleep = self._policy.packet_sleep if self._paced_one else 0.0
        self._paced_one = True
        own = 0.0
        if controller is not None:
            self._watch_others(direction, controller)
            own = controller.delay()
        cap = self._bucket(direction).reserve(size, self.packet_size(direction))
        return max(sleep, own, cap, 0.0)

    def transfer_report(self) -> TransfersReport:
        """The transfers since the last report, for the coordinator (Work Alive)."""
        return self.meter.take_report()

    def _watch_others(self, direction: Direction, controller: DelayController) -> None:
        if self.others is None and self.gateway is None:
            return
        index = 0 if direction == UPLOAD else 1
        # Both asked whoever asks, so their windows stay current for every transfer.
        on_host = self.others is not None and self.others.present(index)
        over_router = self.gateway is not None and self.gateway.present(index)
        if (on_host or over_router) and not controller.local:
            controller.make_way()
        else:
            controller.take_back()

    def _bucket(self, direction: Direction) -> TokenBucket:
        return self._upload if direction == UPLOAD else self._download
