"""Where a request goes on a member of several: what it is about, and the group a new worker
or job is placed in."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from xwch.coordinator.lending import neediest, surplus
from xwch.coordinator.routing import About, Routing, _with_group, about, place
from xwch.store.group_locks import Fences, GroupLock
from xwch.store.placement import GroupLoads


def test_requests_are_about_a_worker_a_job_a_newcomer_or_anything() -> None:
    assert about(b"POST", b"/api/v1/workers") == (About.NEW_WORKER, None)
    assert about(b"POST", b"/api/v1/jobs/") == (About.NEW_JOB, None)
    assert about(b"POST", b"/api/v1/workers/k12/work") == (About.WORKER, "k12")
    assert about(b"POST", b"/api/v1/workers/k12/alive") == (About.WORKER, "k12")
    assert about(b"GET", b"/api/v1/jobs/j7") == (About.JOB, "j7")
    assert about(b"POST", b"/api/v1/jobs/j7/cancel") == (About.JOB, "j7")
    assert about(b"GET", b"/api/v1/jobs") == (About.ANY, None)
    assert about(b"GET", b"/api/v1/workers") == (About.ANY, None)
    assert about(b"POST", b"/api/v1/warehouses/w1/heartbeat") == (About.ANY, None)


def loads(**by_group: tuple[int, int, int]) -> GroupLoads:
    """group=(running jobs, live workers, ready tasks); two slots a worker, each running."""
    result = GroupLoads()
    for group, (jobs, workers, ready) in by_group.items():
        load = result.of(group)
        load.jobs, load.workers, load.slots, load.ready = jobs, workers, 2 * workers, ready
        load.backlog = ready + 2 * workers
    return result


HELD = [GroupLock("g1", "c-1", 1, True), GroupLock("g2", "c-2", 1, True)]


def test_a_new_worker_goes_to_the_group_with_the_fewest_workers() -> None:
    assert place(About.NEW_WORKER, loads(g1=(0, 3, 0), g2=(0, 2, 0)), HELD, ["g1"]) == "g2"
    # A tie stays here.
    assert place(About.NEW_WORKER, loads(g1=(0, 2, 0), g2=(0, 2, 0)), HELD, ["g2"]) == "g2"


def test_a_new_job_goes_to_the_group_running_the_fewest_jobs_with_workers_first() -> None:
    assert place(About.NEW_JOB, loads(g1=(2, 1, 0), g2=(1, 1, 0)), HELD, ["g1"]) == "g2"
    # Even where no worker is: workers follow the work (lending.py).
    assert place(About.NEW_JOB, loads(g1=(1, 3, 0), g2=(0, 0, 0)), HELD, ["g1"]) == "g2"
    # As many jobs each: where workers are, the most slots first.
    assert place(About.NEW_JOB, loads(g1=(1, 0, 0), g2=(1, 1, 0)), HELD, ["g1"]) == "g2"
    assert place(About.NEW_JOB, loads(g1=(1, 3, 0), g2=(1, 1, 0)), HELD, ["g2"]) == "g1"


def test_nothing_is_placed_in_a_group_no_live_member_holds() -> None:
    lapsed = [GroupLock("g1", "c-1", 1, True), GroupLock("g2", "c-2", 1, False)]
    assert place(About.NEW_WORKER, loads(g1=(0, 5, 0)), lapsed, []) == "g1"
    assert place(About.NEW_JOB, GroupLoads(), [GroupLock("g1", None, 0, False)], []) is None


def test_a_placed_request_names_its_group_once() -> None:
    assert _with_group(b"/api/v1/workers", "g2") == b"/api/v1/workers?group=g2"
    assert _with_group(b"/api/v1/jobs?x=1&group=g1", "g3") == b"/api/v1/jobs?x=1&group=g3"


def test_idle_workers_are_lent_to_the_foreign_group_most_in_need() -> None:
    three = [*HELD, GroupLock("g3", "c-3", 1, True)]
    # g2: 10 ready on 2 slots; g3: 10 ready on 6 slots; g1 is this member's own.
    need = loads(g1=(1, 1, 50), g2=(1, 1, 10), g3=(1, 3, 10))
    assert neediest(need, three, ("g1",)) == "g2"
    assert neediest(loads(g1=(1, 1, 50), g2=(1, 1, 0)), HELD, ("g1",)) is None
    # A group whose holder's lease ran out lends nothing and borrows nothing.
    lapsed = [GroupLock("g1", "c-1", 1, True), GroupLock("g2", "c-2", 1, False)]
    assert neediest(loads(g2=(1, 0, 9)), lapsed, ("g1",)) is None


def test_a_member_with_more_slots_than_its_share_of_the_work_has_a_surplus() -> None:
    # g1 (here): 10 slots, all busy, nothing ready; g2: no worker, 10 ready. 20 tasks to
    # run on 10 slots: g1's share is 5.
    assert surplus(loads(g1=(1, 5, 0), g2=(1, 0, 10)), HELD, ("g1",)) == 5
    # Nothing ready elsewhere: no reason to move.
    assert surplus(loads(g1=(1, 5, 0), g2=(1, 0, 0)), HELD, ("g1",)) == 0
    # Short itself: none.
    assert surplus(loads(g1=(1, 1, 30), g2=(1, 5, 10)), HELD, ("g1",)) == 0
    # Shares a little off (125 workers each, one job a little further along): nobody moves.
    assert surplus(loads(g1=(1, 125, 5000), g2=(1, 125, 4000)), HELD, ("g2",)) == 0
    # At most what the short group lacks: g2's share of 20 slots is 10/28 (7.1), it has 2.
    assert surplus(loads(g1=(1, 9, 0), g2=(1, 1, 8)), HELD, ("g1",)) == 5
    # g2's share of 42 slots is 8.4, it lacks 6.4: g1 gives that, not more.
    assert surplus(loads(g1=(1, 20, 0), g2=(1, 1, 8)), HELD, ("g1",)) == 6


class FakeServing:
    """Holds g1 here; g2 is another member's."""

    fences = Fences.of("c-me", {"g1": 1})

    def serves(self, group: str) -> bool:
        return group == "g1"

    def locks(self) -> Deferred[list[GroupLock]]:
        return succeed(HELD)


class CountingStore:
    def __init__(self) -> None:
        self.reads = 0

    def read(self, fn: object, *args: object) -> Deferred[GroupLoads]:
        self.reads += 1
        return succeed(loads(g1=(0, 3, 0), g2=(0, 3, 0)))


class PlacementBurstTests(SynchronousTestCase):
    def test_a_burst_of_newcomers_is_spread_and_reads_the_store_once_a_second(self) -> None:
        clock = Clock()
        store = CountingStore()
        routing = Routing(clock, FakeServing(), store, lambda: 1.0)  # type: ignore[arg-type]
        request = DummyRequest([b"api", b"v1", b"workers"])

        def placed() -> str | None:
            d = ensureDeferred(routing._group(request, About.NEW_WORKER, None))  # type: ignore[arg-type]
            return self.successResultOf(d)

        self.assertEqual([placed() for _ in range(4)], ["g1", "g2", "g1", "g2"])
        self.assertEqual(store.reads, 1)
        clock.advance(Routing.LOADS_FOR)
        self.assertEqual(placed(), "g1")  # the store's counts again
        self.assertEqual(store.reads, 2)
