"""Logical groups spread over the live coordinators: shares, takeover, a frozen member."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.fakes.database import InlineDatabase
from xwch.coordinator.groups import GroupLocks, Plan, fair_share, plan
from xwch.coordinator.members import Membership
from xwch.store.group_locks import GroupLock
from xwch.store.notices import LocalNotices

LEASE = 9.0
ROUND = LEASE / GroupLocks.ROUNDS_PER_LEASE


def test_shares_split_evenly_the_first_by_id_taking_the_rest() -> None:
    live = ["c-b", "c-a", "c-c"]
    assert [fair_share(4, live, m) for m in ("c-a", "c-b", "c-c")] == [2, 1, 1]
    assert fair_share(4, live, "c-gone") == 0


def test_a_member_takes_free_and_lapsed_groups_up_to_its_share() -> None:
    locks = [
        GroupLock("g1", "c-a", 3, True),
        GroupLock("g2", None, 0, False),
        GroupLock("g3", "c-dead", 1, False),
        GroupLock("g4", "c-b", 2, True),
    ]
    assert plan(locks, ["c-a", "c-b"], "c-a").claim == ("g2",)
    assert plan(locks, ["c-a", "c-b"], "c-b").claim == ("g2",)  # races settle in the store
    too_many = [GroupLock(f"g{n}", "c-a", 1, True) for n in range(1, 4)]
    assert plan(too_many, ["c-a", "c-b"], "c-a").release == ("g3",)


class Member:
    """A coordinator's membership and group locks, on a shared store and clock."""

    def __init__(
        self,
        clock: Clock,
        db: InlineDatabase,
        member_id: str,
        notices: LocalNotices | None = None,
        groups: int | None = None,
    ) -> None:
        listening: Deferred[object] = Deferred()
        self.membership = Membership(
            clock,
            db,
            lambda: listening,
            lambda: f"http://{member_id}",
            lambda: (0, 0),
            LEASE,
            notices,
        )
        self.membership.id = member_id
        self.groups = GroupLocks(clock, db, self.membership, lambda: listening, groups, notices)
        self.membership.startService()
        self.groups.startService()
        listening.callback(None)

    def freeze(self) -> None:
        """SIGSTOP: nothing renews, nothing is let go."""
        for loop in (self.membership._renewing, self.groups._rounds):
            assert loop is not None
            loop.stop()

    def thaw(self) -> None:
        for loop, period in (
            (self.membership._renewing, LEASE / Membership.RENEWALS_PER_LEASE),
            (self.groups._rounds, ROUND),
        ):
            assert loop is not None
            loop.start(period, now=True)


def held(*members: Member) -> list[list[str]]:
    return [sorted(m.groups.held) for m in members]


def all_held(*members: Member) -> list[str]:
    return sorted(g for m in members for g in m.groups.held)


def test_the_holder_of_one_group_keeps_it_when_a_second_member_arrives() -> None:
    # Handing the group over would stop the work for a moment, and gain nothing.
    locks = [GroupLock("g1", "c-b", 1, True)]
    assert plan(locks, ["c-a", "c-b"], "c-b") == Plan(claim=(), release=())
    assert plan(locks, ["c-a", "c-b"], "c-a") == Plan(claim=(), release=())
    # Its holder gone, the group is free for the first by id.
    lapsed = [GroupLock("g1", "c-b", 1, False)]
    assert plan(lapsed, ["c-a"], "c-a") == Plan(claim=("g1",), release=())


def test_groups_spread_over_members_and_move_when_one_dies_and_comes_back(
    tmp_path: Path,
) -> None:
    clock = Clock()
    clock.advance(1000)
    db = InlineDatabase(f"sqlite:///{tmp_path / 'store.sqlite'}")
    a, b, c = (Member(clock, db, name) for name in ("c-a", "c-b", "c-c"))
    for _ in range(3):
        clock.advance(ROUND)
    assert held(a, b, c) == [["g1"], ["g2"], ["g3"]]

    b.freeze()
    for _ in range(int(LEASE / ROUND) + 3):
        clock.advance(ROUND)
    # Its group went to the live ones; never two holders of one group.
    assert held(a, c) == [["g1", "g2"], ["g3"]]
    assert held(b) == [["g2"]]  # it does not know yet

    b.thaw()  # renewing first, it finds g2 taken and lets it go
    assert held(b) == [[]]
    for _ in range(4):
        clock.advance(ROUND)
    assert all_held(a, b, c) == ["g1", "g2", "g3"]
    assert all(len(groups) == 1 for groups in held(a, b, c))

    # A member stopping cleanly frees its groups at once for the others.
    c.groups.stopService()
    c.membership.stopService()
    for _ in range(2):
        clock.advance(ROUND)
    assert all_held(a, b) == ["g1", "g2", "g3"]


def test_a_member_stopping_cleanly_hands_its_groups_over_at_once_when_told(
    tmp_path: Path,
) -> None:
    """With notices, the others take a stopping member's groups as soon as it lets them go
    and leaves, not at their next round; a member joining is given its share as quickly."""
    clock = Clock()
    clock.advance(1000)
    db = InlineDatabase(f"sqlite:///{tmp_path / 'store.sqlite'}")
    notices = LocalNotices(clock)
    a, b, c = (Member(clock, db, name, notices, groups=3) for name in ("c-a", "c-b", "c-c"))
    for _ in range(3):
        clock.advance(ROUND)
    assert held(a, b, c) == [["g1"], ["g2"], ["g3"]]

    c.groups.stopService()
    c.membership.stopService()
    clock.advance(0)  # the notices arrive; no round has come
    assert all_held(a, b) == ["g1", "g2", "g3"]

    d = Member(clock, db, "c-d", notices, groups=3)
    clock.advance(0)
    # One of three groups for each of three: the holder of two let one go, announced, and the
    # newcomer took it, all within the same instant.
    assert sorted(len(g) for g in held(a, b, d)) == [1, 1, 1]


def test_a_silent_members_groups_are_taken_as_its_lease_runs_out_not_a_round_later(
    tmp_path: Path,
) -> None:
    clock = Clock()
    clock.advance(1000)
    db = InlineDatabase(f"sqlite:///{tmp_path / 'store.sqlite'}")
    a, b = (Member(clock, db, name, groups=2) for name in ("c-a", "c-b"))
    for _ in range(3):
        clock.advance(ROUND)
    assert held(a, b) == [["g1"], ["g2"]]
    # Its last renewal was at this round; the rounds of both fall at the same instants, so
    # that its lease runs out exactly at one of the other's rounds, which finds it still held.
    b.freeze()
    waited = 0.0
    while "g2" not in held(a)[0]:
        clock.advance(0.05)
        waited += 0.05
        assert waited < LEASE + 2 * ROUND
    assert waited <= LEASE + GroupLocks.AFTER_EXPIRY + GroupLocks.LOOK_AGAIN + 0.06
