"""A member's managers serve the groups it holds: built for the set held, built again when it
changes; a request about a group held elsewhere goes to its live holder, never to one the
caller found dead, but to a new process started at that same address."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.coordinator.harness import CoordinatorTestCase
from xwch.coordinator.serving import NoneServing, Serving
from xwch.store.group_locks import Fences, GroupLock, NotHeld
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
        self.all: list[GroupLock] = []
        self.rounds = 0

    def locks(self) -> Deferred[list[GroupLock]]:
        return succeed(self.all)

    def round_now(self) -> None:
        self.rounds += 1

    def gain(self, group: str, epoch: int) -> None:
        self.held[group] = epoch
        for gained in list(self.on_gained):
            gained(group, epoch)

    def lose(self, group: str) -> None:
        del self.held[group]
        for lost in list(self.on_lost):
            lost(group)


class FakeTasks:
    def __init__(self) -> None:
        self.on_fenced: list[Any] = []
        self.on_unwritten: list[Any] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeManagers:
    """What Serving touches of real managers."""

    def __init__(self, fences: Fences) -> None:
        self.fences = fences
        self.tasks = FakeTasks()
        self.running = False

    def startService(self) -> None:
        self.running = True

    def stopService(self) -> None:
        self.running = False


def member(id: str, url: str) -> MemberRecord:
    return MemberRecord(
        id=id, url=url, started=0.0, last_heard=0.0, workers=0, running=0, live=True
    )


class ServingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.membership = FakeMembership()
        self.groups = FakeGroups()
        self.built: list[FakeManagers] = []
        self.attached: list[Any] = []
        self.serving = Serving(
            self.clock,
            self.membership,  # type: ignore[arg-type]
            self.groups,  # type: ignore[arg-type]
            self.build,  # type: ignore[arg-type]
            self.attached.append,
        )
        self.serving.startService()

    def build(self, fences: Fences) -> Deferred[FakeManagers]:
        managers = FakeManagers(fences)
        self.built.append(managers)
        return succeed(managers)

    def serving_groups(self) -> tuple[str, ...] | None:
        managers: Any = self.serving.managers
        return None if managers is None else managers.fences.groups  # type: ignore[no-any-return]

    def test_managers_are_built_once_for_the_groups_a_round_takes(self) -> None:
        self.groups.gain("g1", 3)
        self.groups.gain("g2", 1)
        self.clock.advance(0)
        self.assertEqual(len(self.built), 1)
        self.assertEqual(self.serving_groups(), ("g1", "g2"))
        self.assertEqual(self.built[0].fences, Fences.of("c-me", {"g1": 3, "g2": 1}))
        self.assertTrue(self.built[0].running)

    def test_losing_a_group_drops_the_managers_at_once_and_builds_for_the_rest(self) -> None:
        self.groups.gain("g1", 3)
        self.groups.gain("g2", 1)
        self.clock.advance(0)
        old = self.built[0]
        self.groups.lose("g1")
        # Dropped before anything else runs: nothing they decide is written.
        self.assertIsNone(self.serving.managers)
        self.assertTrue(old.tasks.closed)
        self.assertFalse(old.running)
        self.clock.advance(0)
        self.assertEqual(self.serving_groups(), ("g2",))
        self.groups.lose("g2")
        self.clock.advance(0)
        self.assertIsNone(self.serving.managers)
        self.assertEqual(len(self.built), 2)

    def test_a_refused_change_asks_for_a_round_and_builds_again(self) -> None:
        self.groups.gain("g1", 3)
        self.clock.advance(0)
        (refused,) = self.built[0].tasks.on_fenced
        refused(NotHeld("g1 is not held"))
        self.assertEqual(self.groups.rounds, 1)
        self.assertIsNone(self.serving.managers)
        # The round found g1 taken.
        self.groups.lose("g1")
        self.clock.advance(0)
        self.assertIsNone(self.serving.managers)
        self.assertEqual(len(self.built), 1)

    def hold(self, group: str, id: str, url: str, epoch: int) -> None:
        self.groups.all = [GroupLock(group, id, epoch, True)]
        self.membership.records = [member(id, url), member("c-me", ME)]

    def test_the_holder_is_where_callers_go(self) -> None:
        self.hold("g1", "c-1", DEAD, 1)
        d = ensureDeferred(self.serving.holder_url("g1", 15.0))
        self.assertEqual(self.successResultOf(d), DEAD)

    def test_a_group_held_here_is_served_here(self) -> None:
        self.groups.gain("g2", 1)
        self.clock.advance(0)
        self.hold("g1", "c-1", DEAD, 1)
        self.assertIsNone(self.successResultOf(ensureDeferred(self.serving.holder_url("g2", 1))))
        self.assertEqual(
            self.successResultOf(ensureDeferred(self.serving.holder_url("g1", 1))), DEAD
        )
        # About no group in particular: here, since this member serves.
        self.assertIsNone(self.successResultOf(ensureDeferred(self.serving.holder_url(None, 1))))

    def test_a_holder_the_caller_found_dead_is_waited_out(self) -> None:
        self.hold("g1", "c-1", DEAD, 1)
        d = ensureDeferred(self.serving.holder_url("g1", 15.0, frozenset({DEAD})))
        self.clock.advance(5)
        self.assertNoResult(d)
        # Its lease ran out; the dead one started again at the same address took the group.
        self.hold("g1", "c-1-again", DEAD, 2)
        self.clock.advance(Serving.LOOK_INTERVAL)
        self.assertEqual(self.successResultOf(d), DEAD)

    def test_no_one_holding_the_group_within_the_patience_is_said(self) -> None:
        d = ensureDeferred(self.serving.holder_url("g1", 3.0))
        self.clock.advance(3.5)
        self.failureResultOf(d, NoneServing)


class DroppedManagersTests(CoordinatorTestCase):
    def test_managers_stopped_leave_no_listener_on_the_store(self) -> None:
        """A member builds new managers each time the groups it holds change; the store,
        which outlives them, must not keep the old ones' listeners."""
        managers = self.coordinator.managers
        assert managers is not None
        self.assertEqual(len(self.db.on_commit), 1)
        managers.startService()
        managers.stopService()
        self.assertEqual(self.db.on_commit, [])
