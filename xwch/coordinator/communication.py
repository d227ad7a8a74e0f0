"""The communication manager: the transfer policy every sender applies, and admission control.

It senses the network's load (:class:`~xwch.coordinator.load.LoadEstimator`, fed by Work Alive
and heartbeat reports and by the coordinator's own interface counters) and publishes, per link,
a :class:`~xwch.protocol.worker.Policy`: the packet size (larger on fast links, so a packet is a
tenth of a second's worth; smaller under load), the sleep between two packets (none on a quiet
link, up to :attr:`CommunicationManager.MAX_SLEEP` on a loaded one: the higher the load, the
longer the sleep) and how many transfers run at once (fewer under load). A warehouse's policy
carries how many transfer sessions it serves at once, from its link's capacity and load.

It also bounds how many Work Requests the coordinator serves at once: the limit follows how
long they take (an additive-increase, multiplicative-decrease loop on their latency) and the
network's load; beyond it a caller is told to retry after a short, jittered delay rather than
queued without limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import cast

from twisted.internet.interfaces import IReactorTime

from xwch.coordinator.load import (
    COORDINATOR_LINK,
    LINK_COORDINATOR,
    LINK_WAREHOUSE,
    LINK_WORKER,
    LinkEstimate,
    LoadEstimator,
)
from xwch.errors import XwchError
from xwch.protocol.worker import Policy, TransfersReport
from xwch.transfer.meter import InterfaceCounters, host_interface_counters


class Busy(XwchError):
    """Too many requests are being served; retry after ``retry_after`` seconds."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many {what} at once; retry after {retry_after:.1f} s")


class _WallClock:
    """``seconds()`` for a manager built without a reactor (tools, old callers)."""

    def seconds(self) -> float:
        import time

        return time.time()


class CommunicationManager:
    """Publishes the transfer policy and admits requests up to the current limits."""

    DEFAULT_POLICY = Policy(packet_size=1024 * 1024, packet_sleep=0.0, max_transfers=4)
    # Work Requests served at once: at most 256, at least 4. Most of a Work Request's time is
    # the wait for its group commit, which costs no CPU and is shared by all waiting (the more
    # wait, the more one commit carries); at 64, one slow commit under 500 requests a second
    # turned workers away by the hundred. Measured alternating 64 and 256 in one run
    # (bench/fleet.py, tasks of 3 s): 1,500 workers got 87 and 204 busy answers with 64, none
    # with 256; a burst of 2,000 at once (bench/admission.py) was all served in 5.2 s instead
    # of 8.9 s, in 2 tries at most instead of 4, for 1 MiB more memory at the peak.
    MAX_WORK_REQUESTS = 256
    MIN_WORK_REQUESTS = 4
    # Retry-After of a refused Work Request, drawn in [1, 2] times it.
    RETRY_AFTER = 1.0
    # Limits and policies are recomputed at most this often: the Work Alive period, the pace at
    # which new reports come in.
    REFRESH_INTERVAL = 5.0
    # Work Requests slower than this on average: serve fewer at once (x0.75); faster than the
    # low mark: serve more (+32: from a quarter to the most in half a minute). A Work Request is
    # a few milliseconds when all is well.
    WR_LATENCY_HIGH = 0.5
    WR_LATENCY_LOW = 0.1
    WR_DECREASE = 0.75
    WR_INCREASE = 32
    # Policy: under QUIET_LOAD no sleep; above, the sleep grows linearly to MAX_SLEEP at full
    # load. Half a second between packets leaves a busy link nearly all to others while the
    # transfer still progresses.
    QUIET_LOAD = 0.25
    MAX_SLEEP = 0.5
    # Packets of a tenth of a second at the link's capacity, within [64 KiB, 8 MiB]: big enough
    # that per-request costs vanish on a fast link, small enough to share a slow one; at full
    # load a quarter of that.
    PACKET_TIME = 0.1
    MIN_PACKET = 64 * 1024
    MAX_PACKET = 8 * 1024 * 1024
    LOADED_PACKET_FACTOR = 0.25
    # Transfers one worker runs at once: 4 on a quiet link, 1 on a full one.
    MAX_TRANSFERS = 4
    # Sessions a warehouse serves at once: each should get at least 256 KiB/s (a 1 MiB packet
    # every 4 s), within [4, 64]; 32 while the link's capacity is unknown.
    SESSION_RATE = 256 * 1024
    MIN_SESSIONS = 4
    MAX_SESSIONS = 64
    DEFAULT_SESSIONS = 32
    # The status shows every warehouse's link and the most loaded workers' links, this many.
    STATUS_WORKER_LINKS = 50

    def __init__(
        self,
        policy: Policy | None = None,
        rng: random.Random | None = None,
        reactor: IReactorTime | None = None,
        interface: InterfaceCounters | None = host_interface_counters,
    ) -> None:
        # A policy given here (or by set_policy) is fixed: tests and tools pin it.
        self._fixed = policy
        self._rng = rng or random.Random()
        self._clock: IReactorTime = reactor or cast(IReactorTime, _WallClock())
        self._interface = interface
        self.estimator = LoadEstimator(self._clock)
        self._base_wr_limit = self.MAX_WORK_REQUESTS
        self.max_work_requests = self.MAX_WORK_REQUESTS
        self.work_requests_in_flight = 0
        self.work_requests_served = 0
        # Told each served Work Request's latency (the metrics' histogram listens here).
        self.on_work_request_served: list[Callable[[float], None]] = []
        self.work_requests_refused = 0
        self._wr_latency_sum = 0.0
        self._wr_latency_count = 0
        self._refreshed = self._clock.seconds()
        self._counters_then = interface() if interface is not None else None
        # warehouse URL -> its last sessions report (active, limit, refused).
        self._sessions: dict[str, Mapping[str, int]] = {}

    # Policies

    def policy(self) -> Policy:
        """The policy for a party whose link is not known: the network's mean load."""
        return self.policy_for(None)

    def set_policy(self, policy: Policy) -> None:
        self._fixed = policy

    def policy_for(self, link: str | None) -> Policy:
        """The policy for a worker (or client) on ``link``."""
        if self._fixed is not None:
            return self._fixed
        self._maybe_refresh()
        estimate = self.estimator.estimate(link) if link is not None else None
        load = estimate.load if estimate is not None else self._network_load()
        capacity = estimate.capacity if estimate is not None else None
        return self._policy(load, capacity, self.MAX_TRANSFERS)

    def warehouse_policy(self, url: str) -> Policy:
        """The policy for the warehouse at ``url``; ``max_transfers`` is its session limit."""
        if self._fixed is not None:
            return self._fixed
        self._maybe_refresh()
        estimate = self.estimator.estimate(url)
        load = estimate.load if estimate is not None else 0.0
        capacity = estimate.capacity if estimate is not None else None
        if capacity:
            sessions = capacity / self.SESSION_RATE
            sessions = min(self.MAX_SESSIONS, max(self.MIN_SESSIONS, sessions))
        else:
            sessions = self.DEFAULT_SESSIONS
        # Under load fewer sessions, down to half.
        sessions = max(self.MIN_SESSIONS, round(sessions * (1.0 - 0.5 * load)))
        return self._policy(load, capacity, int(sessions))

    def _policy(self, load: float, capacity: float | None, transfers: int) -> Policy:
        if load <= self.QUIET_LOAD:
            sleep = 0.0
        else:
            sleep = self.MAX_SLEEP * (load - self.QUIET_LOAD) / (1.0 - self.QUIET_LOAD)
        if capacity:
            packet = capacity * self.PACKET_TIME
        else:
            packet = float(self.DEFAULT_POLICY.packet_size)
        packet *= 1.0 - (1.0 - self.LOADED_PACKET_FACTOR) * load
        packet = min(self.MAX_PACKET, max(self.MIN_PACKET, packet))
        if transfers == self.MAX_TRANSFERS:
            transfers = max(1, round(self.MAX_TRANSFERS * (1.0 - load)))
        return Policy(
            packet_size=int(packet), packet_sleep=round(sleep, 3), max_transfers=transfers
        )

    # Reports

    def report_worker(self, worker_id: str, report: TransfersReport) -> None:
        """A worker's transfers since its last Work Alive."""
        self.estimator.report(worker_id, LINK_WORKER, report)

    def report_warehouse(
        self,
        url: str,
        report: TransfersReport | None,
        sessions: Mapping[str, int] | None,
    ) -> None:
        """A warehouse's heartbeat: its traffic (if it tells) and its sessions."""
        self.estimator.report(url, LINK_WAREHOUSE, report or TransfersReport(seconds=0.0))
        if sessions is not None:
            self._sessions[url] = dict(sessions)

    def forget_warehouse(self, url: str) -> None:
        self.estimator.forget(url)
        self._sessions.pop(url, None)

    # Admission

    @contextmanager
    def admit_work_request(self) -> Iterator[None]:
        """Serve one Work Request, or raise :class:`Busy` when at the limit."""
        self._maybe_refresh()
        if self.work_requests_in_flight >= self.max_work_requests:
            self.work_requests_refused += 1
            # Jitter spreads the retries of many refused workers over time.
            raise Busy("work requests", self.RETRY_AFTER * (1 + self._rng.random()))
        self.work_requests_in_flight += 1
        started = self._clock.seconds()
        try:
            yield
        finally:
            self.work_requests_in_flight -= 1
            self.work_requests_served += 1
            latency = max(0.0, self._clock.seconds() - started)
            self._wr_latency_sum += latency
            self._wr_latency_count += 1
            for listener in self.on_work_request_served:
                listener(latency)

    # Refresh

    def _network_load(self) -> float:
        # Warehouses are where transfers meet: their mean load is the network's.
        return self.estimator.mean_load(LINK_WAREHOUSE)

    def _maybe_refresh(self) -> None:
        now = self._clock.seconds()
        elapsed = now - self._refreshed
        if elapsed < self.REFRESH_INTERVAL:
            return
        self._refreshed = now
        self._sample_host(elapsed)
        if self._wr_latency_count:
            latency = self._wr_latency_sum / self._wr_latency_count
            if latency > self.WR_LATENCY_HIGH:
                self._base_wr_limit = max(
                    self.MIN_WORK_REQUESTS, int(self._base_wr_limit * self.WR_DECREASE)
                )
            elif latency < self.WR_LATENCY_LOW:
                self._base_wr_limit = min(
                    self.MAX_WORK_REQUESTS, self._base_wr_limit + self.WR_INCREASE
                )
            self._wr_latency_sum, self._wr_latency_count = 0.0, 0
        # Every Work Request served starts transfers: on a loaded network, fewer at once.
        scaled = round(self._base_wr_limit * (1.0 - 0.5 * self._network_load()))
        self.max_work_requests = max(self.MIN_WORK_REQUESTS, scaled)

    def _sample_host(self, elapsed: float) -> None:
        if self._interface is None:
            return
        current = self._interface()
        then, self._counters_then = self._counters_then, current
        if current is None or then is None:
            return
        sent, received = max(0, current[0] - then[0]), max(0, current[1] - then[1])
        self.estimator.host_counters(COORDINATOR_LINK, LINK_COORDINATOR, sent, received, elapsed)

    # What the API and xwch-client show

    def status(self) -> dict[str, object]:
        self._maybe_refresh()
        estimates = self.estimator.estimates()
        workers = [e for e in estimates if e.kind == LINK_WORKER]
        workers.sort(key=lambda e: (-e.load, e.link))
        links: list[LinkEstimate] = sorted(
            [e for e in estimates if e.kind != LINK_WORKER], key=lambda e: (e.kind, e.link)
        )
        links.extend(workers[: self.STATUS_WORKER_LINKS])
        return {
            "policy": self.policy().to_json(),
            "max_work_requests": self.max_work_requests,
            "work_requests_in_flight": self.work_requests_in_flight,
            "work_requests_refused": self.work_requests_refused,
            "network_load": round(self._network_load(), 3),
            "worker_links": len(workers),
            "sessions": {url: dict(s) for url, s in sorted(self._sessions.items())},
            "links": [e.to_json() for e in links],
        }
