"""Where a standby sends a caller: to the live member holding the lead, never to one the caller
found dead, but to a new process started at that same address."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.coordinator.harness import CoordinatorTestCase
from xwch.coordinator.leadership import Leadership, NoneServing
from xwch.store.group_locks import GroupLock
from xwch.store.members import MemberRecord

ME = "http://c2:8750"
DEAD = "http://c1:8750"


class FakeMembership:
    id = "c-me"

    def __init__(self) -> None:
        self.records: list[MemberRecord] = []

    def url(self) -> str:
        return ME

    def members(self) -> Deferred[list[MemberRecord]]:
        return succeed(self.records)


class FakeGroups:
    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.on_gained: list[Any] = []
        self.on_lost: list[Any] = []
        self.lead: GroupLock = GroupLock("g1", None, 0, False)

    def locks(self) -> Deferred[list[GroupLock]]:
        return succeed([self.lead])


def member(id: str, url: str) -> MemberRecord:
    return MemberRecord(
        id=id, url=url, started=0.0, last_heard=0.0, workers=0, running=0, live=True
    )


class ServingUrlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.membership = FakeMembership()
        self.groups = FakeGroups()
        self.leadership = Leadership(
            self.clock,
            self.membership,  # type: ignore[arg-type]
            self.groups,  # type: ignore[arg-type]
            lambda fence: None,  # type: ignore[arg-type, return-value]
            lambda managers: None,
        )

    def hold(self, id: str, url: str, epoch: int) -> None:
        self.groups.lead = GroupLock("g1", id, epoch, True)
        self.membership.records = [member(id, url), member("c-me", ME)]

    def test_the_holder_is_where_callers_go(self) -> None:
        self.hold("c-1", DEAD, 1)
        d = ensureDeferred(self.leadership.serving_url(15.0))
        self.assertEqual(self.successResultOf(d), DEAD)

    def test_a_holder_the_caller_found_dead_is_waited_out(self) -> None:
        self.hold("c-1", DEAD, 1)
        d = ensureDeferred(self.leadership.serving_url(15.0, frozenset({DEAD})))
        self.clock.advance(5)
        self.assertNoResult(d)
        # Its lease ran out; the dead one started again at the same address took the lead.
        self.hold("c-1-again", DEAD, 2)
        self.clock.advance(Leadership.LOOK_INTERVAL)
        self.assertEqual(self.successResultOf(d), DEAD)

    def test_no_one_serving_within_the_patience_is_said(self) -> None:
        d = ensureDeferred(self.leadership.serving_url(3.0))
        self.clock.advance(3.5)
        self.failureResultOf(d, NoneServing)


class DroppedManagersTests(CoordinatorTestCase):
    def test_managers_stopped_leave_no_listener_on_the_store(self) -> None:
        """A member builds new managers each time it takes the lead; the store, which outlives
        them, must not keep the old ones' listeners."""
        managers = self.coordinator.managers
        assert managers is not None
        self.assertEqual(len(self.db.on_commit), 1)
        managers.startService()
        managers.stopService()
        self.assertEqual(self.db.on_commit, [])
