"""The communication manager: load sensed from synthetic reports on a Clock, the policy it
publishes, admission of Work Requests, and what the API and its status show of it."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from tests.unit.coordinator.harness import CoordinatorTestCase
from xwch.coordinator.communication import Busy, CommunicationManager
from xwch.coordinator.load import LINK_WAREHOUSE, LINK_WORKER, LoadEstimator, is_loopback_url
from xwch.protocol.wire import PROTOCOL_VERSION
from xwch.protocol.worker import InterfaceTraffic, PeerTraffic, Policy, TransfersReport
from xwch.store import tokens

MB = 1_000_000.0
WAREHOUSE = "http://10.0.0.5:8751"


def traffic(
    received: float,
    busy: float,
    rtt: float,
    min_rtt: float | None = None,
    peer: str = WAREHOUSE,
    sent: float = 0,
    packets: int = 10,
) -> tuple[str, PeerTraffic]:
    return peer, PeerTraffic(
        sent=int(sent),
        received=int(received),
        busy=busy,
        packets=packets,
        min_rtt=rtt if min_rtt is None else min_rtt,
        avg_rtt=rtt,
    )


def report(
    *peers: tuple[str, PeerTraffic],
    seconds: float = 5.0,
    iface: tuple[float, float] | None = None,
) -> TransfersReport:
    return TransfersReport(
        seconds=seconds,
        peers=dict(peers),
        interface=None
        if iface is None
        else InterfaceTraffic(sent=int(iface[0]), received=int(iface[1])),
    )


def manager(clock: Clock) -> CommunicationManager:
    return CommunicationManager(reactor=clock, rng=random.Random(1), interface=None)


# -- the estimator -------------------------------------------------------------------------


def test_a_link_xwch_fills_alone_is_not_loaded() -> None:
    """A worker downloading 5 MB/s for 5 s with no queue and no other traffic: capacity 5 MB/s,
    XWCH's rate 5 MB/s, load 0 (XWCH's own traffic is not load)."""
    clock = Clock()
    est = LoadEstimator(clock)
    est.report("k1", LINK_WORKER, report(traffic(25 * MB, 5.0, 0.002), iface=(0.1 * MB, 25 * MB)))
    e = est.estimate("k1")
    assert e is not None
    assert e.capacity == pytest.approx(5 * MB)
    assert e.xwch_rate == pytest.approx(5 * MB)
    assert e.other_rate == pytest.approx(0.02 * MB)
    assert e.queueing_delay == 0.0
    assert e.load < 0.01


def test_other_traffic_is_told_from_xwch_traffic() -> None:
    """The interfaces carried 25 MB in 5 s, XWCH 5 MB of it: the other 20 MB are others', and
    the link (5 MB/s at best) is 80% loaded by them."""
    clock = Clock()
    est = LoadEstimator(clock)
    est.report("k1", LINK_WORKER, report(traffic(25 * MB, 5.0, 0.002)))
    clock.advance(5)
    est.report("k1", LINK_WORKER, report(traffic(5 * MB, 5.0, 0.002), iface=(0, 25 * MB)))
    e = est.estimate("k1")
    assert e is not None
    assert e.other_rate == pytest.approx(4 * MB)
    assert e.load == pytest.approx(0.8)


def test_xwch_bytes_to_loopback_peers_are_not_subtracted() -> None:
    """Loopback traffic never reaches the interfaces' counters: it is not taken off them."""
    clock = Clock()
    est = LoadEstimator(clock)
    local = traffic(10 * MB, 5.0, 0.001, peer="http://127.0.0.1:8751")
    est.report("k1", LINK_WORKER, report(local, iface=(0, 5 * MB)))
    e = est.estimate("k1")
    assert e is not None and e.other_rate == pytest.approx(1 * MB)
    assert is_loopback_url("http://localhost:1") and not is_loopback_url("http://10.0.0.1:1")


def test_queueing_delay_raises_the_load() -> None:
    """Packets meeting 100 ms over the base delay: half of DELAY_FULL, a load of 0.5."""
    clock = Clock()
    est = LoadEstimator(clock)
    est.report("k1", LINK_WORKER, report(traffic(10 * MB, 5.0, 0.002)))
    clock.advance(5)
    est.report("k1", LINK_WORKER, report(traffic(2 * MB, 5.0, 0.102, min_rtt=0.05)))
    e = est.estimate("k1")
    assert e is not None
    assert e.min_rtt == pytest.approx(0.002)
    assert e.queueing_delay == pytest.approx(0.1)
    assert e.load == pytest.approx(0.1 / LoadEstimator.DELAY_FULL)


def test_workers_tell_the_delay_of_the_warehouses_they_use() -> None:
    """A warehouse's link delay comes from its clients too: when they all see a queue, its
    load rises (only for registered warehouses: a URL alone makes no state)."""
    clock = Clock()
    est = LoadEstimator(clock)
    est.report(WAREHOUSE, LINK_WAREHOUSE, report())
    est.report("k1", LINK_WORKER, report(traffic(1 * MB, 1.0, 0.002)))
    est.report("k2", LINK_WORKER, report(traffic(1 * MB, 1.0, 0.202, min_rtt=0.1)))
    est.report("k3", LINK_WORKER, report(traffic(1 * MB, 1.0, 0.2, peer="http://nowhere:1")))
    est.report(WAREHOUSE, LINK_WAREHOUSE, report())
    e = est.estimate(WAREHOUSE)
    assert e is not None
    assert e.queueing_delay == pytest.approx(0.1)
    assert est.estimate("http://nowhere:1") is None


def test_capacity_is_the_best_rate_of_the_last_ten_minutes() -> None:
    """A link's capacity is the best rate seen lately; ten minutes later it is forgotten."""
    clock = Clock()
    est = LoadEstimator(clock)
    est.report("k1", LINK_WORKER, report(traffic(50 * MB, 5.0, 0.002)))
    for _ in range(11):
        clock.advance(60)
        est.report("k1", LINK_WORKER, report(traffic(1 * MB, 1.0, 0.002)))
    e = est.estimate("k1")
    assert e is not None and e.capacity == pytest.approx(1 * MB)


def test_silent_links_are_forgotten_and_memory_is_bounded(monkeypatch: Any) -> None:
    """A link not heard of for LINK_TTL is dropped; beyond MAX_LINKS the oldest go first."""
    clock = Clock()
    est = LoadEstimator(clock)
    monkeypatch.setattr(LoadEstimator, "MAX_LINKS", 3)
    for n in range(5):
        est.report(f"k{n}", LINK_WORKER, report())
    assert [e.link for e in est.estimates()] == ["k2", "k3", "k4"]
    clock.advance(LoadEstimator.LINK_TTL + 1)
    assert est.estimates() == []


# -- the policy ----------------------------------------------------------------------------


def loaded(cm: CommunicationManager, clock: Clock, link: str, other: float) -> Policy:
    """The policy for a 5 MB/s link on which others take ``other`` bytes/s."""
    cm.report_worker(link, report(traffic(25 * MB, 5.0, 0.002)))
    clock.advance(5)
    cm.report_worker(link, report(traffic(1 * MB, 1.0, 0.002), iface=(0, 1 * MB + other * 5.0)))
    return cm.policy_for(link)


def test_the_higher_the_load_the_longer_the_sleep() -> None:
    """On a quiet link no sleep and big packets; the more others take, the longer the sleep
    between packets, the smaller the packets and the fewer transfers at once."""
    clock = Clock()
    cm = manager(clock)
    policies = [loaded(cm, clock, f"k{n}", other * MB) for n, other in enumerate([0, 2, 3.5, 5])]
    sleeps = [p.packet_sleep for p in policies]
    assert sleeps[0] == 0.0
    assert sleeps == sorted(sleeps) and sleeps[-1] > 0.9 * CommunicationManager.MAX_SLEEP
    sizes = [p.packet_size for p in policies]
    assert sizes[0] == int(5 * MB * CommunicationManager.PACKET_TIME)
    assert sizes == sorted(sizes, reverse=True)
    assert [p.max_transfers for p in policies] == [4, 2, 1, 1]


def test_unknown_links_get_the_default_policy_and_a_fixed_policy_wins() -> None:
    """With nothing reported the policy is the default; a policy set by hand is kept."""
    clock = Clock()
    cm = manager(clock)
    assert cm.policy() == CommunicationManager.DEFAULT_POLICY
    pinned = Policy(packet_size=4096, packet_sleep=1.0, max_transfers=1)
    cm.set_policy(pinned)
    assert cm.policy_for("k1") == pinned


def test_a_warehouse_serves_sessions_in_proportion_to_its_link() -> None:
    """A warehouse gets one session per 256 KiB/s of capacity (4 to 64), fewer under load."""
    clock = Clock()
    cm = manager(clock)
    assert cm.warehouse_policy(WAREHOUSE).max_transfers == CommunicationManager.DEFAULT_SESSIONS
    served = traffic(0, 5.0, 0.002, peer="clients", sent=25 * MB)
    cm.report_warehouse(WAREHOUSE, report(served), {"active": 3, "limit": 32, "refused": 1})
    assert cm.warehouse_policy(WAREHOUSE).max_transfers == round(5 * MB / (256 * 1024))
    big = traffic(0, 5.0, 0.002, peer="clients", sent=5000 * MB)
    cm.report_warehouse("http://big:1", report(big), None)
    assert cm.warehouse_policy("http://big:1").max_transfers == CommunicationManager.MAX_SESSIONS


# -- admission -----------------------------------------------------------------------------


def test_work_requests_beyond_the_limit_are_told_to_retry_with_jitter() -> None:
    """At the limit a Work Request gets Busy with a Retry-After in [1, 2] s; nothing queues."""
    clock = Clock()
    cm = manager(clock)
    cm.max_work_requests = 2
    with cm.admit_work_request(), cm.admit_work_request():
        with pytest.raises(Busy) as caught:
            with cm.admit_work_request():
                pass
    assert 1.0 <= caught.value.retry_after <= 2.0
    assert (cm.work_requests_in_flight, cm.work_requests_refused) == (0, 1)


def test_slow_work_requests_lower_the_limit_and_fast_ones_raise_it() -> None:
    """Work Requests taking over WR_LATENCY_HIGH cut the limit by a quarter at each refresh;
    fast ones give it back WR_INCREASE at a time, up to MAX_WORK_REQUESTS."""
    clock = Clock()
    cm = manager(clock)
    limits = []
    for took in (1.0, 1.0, 0.001, 0.001):
        with cm.admit_work_request():
            clock.advance(took)
        clock.advance(CommunicationManager.REFRESH_INTERVAL)
        cm.status()
        limits.append(cm.max_work_requests)
    most, more = CommunicationManager.MAX_WORK_REQUESTS, CommunicationManager.WR_INCREASE
    cut = int(int(most * 0.75) * 0.75)
    assert limits == [int(most * 0.75), cut, cut + more, cut + 2 * more]
    assert cut + 2 * more < most


def test_a_loaded_network_admits_fewer_work_requests() -> None:
    """Every Work Request starts transfers: with the warehouses' links full, half as many."""
    clock = Clock()
    cm = manager(clock)
    cm.report_warehouse(WAREHOUSE, report(traffic(0, 5.0, 0.002, sent=25 * MB)), None)
    clock.advance(5)
    # Others take 4 MB/s of the 5 MB/s link: a load of 0.8, and 40% fewer Work Requests.
    full = report(traffic(0, 5.0, 0.002, sent=1 * MB), iface=(21 * MB, 0))
    cm.report_warehouse(WAREHOUSE, full, None)
    clock.advance(CommunicationManager.REFRESH_INTERVAL)
    with cm.admit_work_request():
        pass
    assert cm.max_work_requests == round(CommunicationManager.MAX_WORK_REQUESTS * 0.6)


def test_the_coordinator_samples_its_own_interfaces() -> None:
    """The coordinator's host counters show as the "coordinator" link."""
    clock = Clock()
    counters = iter([(0, 0), (5 * MB, 10 * MB)])
    cm = CommunicationManager(reactor=clock, interface=lambda: next(counters))
    clock.advance(CommunicationManager.REFRESH_INTERVAL)
    status = cm.status()
    [link] = status["links"]  # type: ignore[misc]
    assert link["link"] == "coordinator" and link["capacity"] == pytest.approx(2 * MB)


# -- through the API -----------------------------------------------------------------------


class NetworkApiTests(CoordinatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.http = StubTreq(self.coordinator.root)
        self.secrets = {}
        for role in ("client", "worker", "warehouse"):
            with self.db.engine.begin() as conn:
                self.secrets[role] = tokens.create_token_thd(conn, role, role, 0.0)

    def call(self, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": "Bearer " + self.secrets[role]}
        data = None if body is None else json.dumps(body).encode()
        d = self.http.request(method, "http://c/api/v1" + path, headers=headers, data=data)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content)

    def register_worker(self) -> str:
        facts = {
            "name": "h",
            "address": "10.0.0.9",
            "platform": "linux-x86_64",
            "cores": 2,
            "memory": 1,
            "slots": 2,
            "performance": 1.0,
            "protocol": PROTOCOL_VERSION,
        }
        code, reg = self.call("POST", "/workers", "worker", facts)
        self.assertEqual(code, 201)
        return str(reg["worker_id"])

    def test_work_alive_reports_feed_the_policy_the_worker_gets(self) -> None:
        """A worker whose link is busy with others' traffic gets a policy with a sleep in the
        reply to its next Work Alive; ``xwch-client network`` shows its link."""
        worker = self.register_worker()
        quiet = report(traffic(25 * MB, 5.0, 0.002, peer="http://127.0.0.1:9"))
        code, reply = self.call(
            "POST",
            f"/workers/{worker}/alive",
            "worker",
            {"running": [], "transfers": quiet.to_json()},
        )
        self.assertEqual((code, reply["policy"]["packet_sleep"]), (200, 0.0))
        self.clock.advance(5)
        busy = report(traffic(1 * MB, 1.0, 0.002, peer="http://127.0.0.1:9"), iface=(0, 25 * MB))
        code, reply = self.call(
            "POST",
            f"/workers/{worker}/alive",
            "worker",
            {"running": [], "transfers": busy.to_json()},
        )
        self.assertGreater(reply["policy"]["packet_sleep"], 0.3)
        code, status = self.call("GET", "/status", "client")
        links = {link["link"]: link for link in status["communication"]["links"]}
        self.assertAlmostEqual(links[worker]["load"], 1.0)
        self.assertIn("work_requests_refused", status["communication"])

    def test_a_malformed_transfers_report_is_a_clear_400(self) -> None:
        worker = self.register_worker()
        code, reply = self.call(
            "POST",
            f"/workers/{worker}/alive",
            "worker",
            {"running": [], "transfers": {"seconds": -1}},
        )
        self.assertEqual(code, 400)
        self.assertIn("transfers.seconds", reply["message"])

    def test_a_warehouse_heartbeat_is_answered_with_its_policy(self) -> None:
        """A heartbeat with traffic and sessions gets the warehouse's policy back; the sessions
        show in the status."""
        beat = {
            "capacity": 10**9,
            "free": 10**9,
            "objects": 0,
            "transfers": report(traffic(0, 5.0, 0.002, peer="clients", sent=25 * MB)).to_json(),
            "sessions": {"active": 2, "limit": 32, "refused": 5},
        }
        code, reply = self.call(
            "POST", f"/warehouses/{self.warehouse.id}/heartbeat", "warehouse", beat
        )
        self.assertEqual(code, 200)
        self.assertEqual(reply["policy"]["max_transfers"], round(5 * MB / (256 * 1024)))
        code, status = self.call("GET", "/status", "client")
        self.assertEqual(
            status["communication"]["sessions"][self.warehouse.url],
            {"active": 2, "limit": 32, "refused": 5},
        )
        # An older warehouse's heartbeat (no transfers, no sessions) still works.
        code, reply = self.call(
            "POST",
            f"/warehouses/{self.warehouse.id}/heartbeat",
            "warehouse",
            {"capacity": 1, "free": 1, "objects": 0},
        )
        self.assertEqual(code, 200)
        self.assertIn("policy", reply)
