"""The vote on replicated results, and the reliability records it feeds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xwch.coordinator.reliability import Reliability
from xwch.coordinator.replication import Replicas, SecondReplica, returned_result
from xwch.coordinator.vote import AGREED, FAILED, PENDING, Ballot, outputs_key, tally
from xwch.dagreplication import Replication


def test_agreement_of_the_quorum_accepts_the_result() -> None:
    """Two different workers returning the same outputs make a quorum of 2."""
    verdict = tally([Ballot("a", "k1"), Ballot("b", "k1")], quorum=2, max_results=4)
    assert (verdict.state, verdict.key, verdict.voters) == (AGREED, "k1", frozenset("ab"))


def test_disagreement_asks_for_one_more_result() -> None:
    verdict = tally([Ballot("a", "k1"), Ballot("b", "k2")], quorum=2, max_results=4)
    assert (verdict.state, verdict.wanted) == (PENDING, 1)
    # Already running: nothing more to start.
    assert tally([Ballot("a", "k1")], quorum=2, max_results=4, running=1).wanted == 0


def test_no_quorum_once_the_results_allowed_cannot_make_one() -> None:
    ballots = [Ballot("a", "k1"), Ballot("b", "k2"), Ballot("c", "k2")]
    assert tally(ballots, quorum=3, max_results=4).state == PENDING
    verdict = tally([*ballots, Ballot("d", "k3")], quorum=3, max_results=4)
    assert (verdict.state, verdict.message) == (FAILED, "no quorum: 4 results, 3 different")


def test_one_worker_counts_once() -> None:
    """A worker saying the same thing twice is one voice."""
    verdict = tally([Ballot("a", "k1"), Ballot("a", "k1")], quorum=2, max_results=4)
    assert verdict.state == PENDING


def test_outputs_key_ignores_order_and_sees_every_byte() -> None:
    assert outputs_key([("a", "1"), ("b", "2")]) == outputs_key([("b", "2"), ("a", "1")])
    assert outputs_key([("a", "1"), ("b", "2")]) != outputs_key([("a", "2"), ("b", "1")])


def test_a_bad_vote_is_refused() -> None:
    with pytest.raises(ValueError, match="quorum 3"):
        tally([], quorum=3, max_results=2)


@given(
    ballots=st.lists(
        st.builds(Ballot, voter=st.sampled_from("abcdef"), key=st.sampled_from(["x", "y", "z"])),
        max_size=30,
    ),
    quorum=st.integers(1, 10),
    extra=st.integers(0, 5),
    running=st.integers(0, 5),
)
def test_the_vote_never_accepts_what_fewer_than_quorum_workers_returned(
    ballots: list[Ballot], quorum: int, extra: int, running: int
) -> None:
    """Whatever the ballots, an accepted result was returned by at least ``quorum`` different
    workers; and a vote still open asks for no more results than it may gather."""
    verdict = tally(ballots, quorum, quorum + extra, running)
    first_word: dict[str, str] = {}
    for b in ballots:
        first_word.setdefault(b.voter, b.key)
    if verdict.state == AGREED:
        # Only a worker's first result speaks for it.
        backers = {voter for voter, key in first_word.items() if key == verdict.key}
        assert len(backers) >= quorum
        assert verdict.voters == backers
    elif verdict.state == PENDING:
        voters = len({b.voter for b in ballots})
        assert verdict.wanted + running <= quorum + extra - voters or verdict.wanted == 0


def test_trust_comes_from_a_run_of_agreed_results_and_goes_with_a_lost_vote() -> None:
    reliability = Reliability()
    for _ in range(Reliability.TRUST_AFTER - 1):
        reliability.voted(["w"], [])
    assert not reliability.trusted("w")
    reliability.voted(["w"], [])
    assert reliability.trusted("w")
    reliability.voted([], ["w"])
    assert not reliability.trusted("w")
    assert reliability.record("w").agreed == Reliability.TRUST_AFTER
    # A new run is not enough while the worker lost more than one vote in TRUST_RATIO.
    for _ in range(Reliability.TRUST_AFTER):
        reliability.voted(["w"], [])
    assert reliability.trusted("w") == (2 * Reliability.TRUST_AFTER >= Reliability.TRUST_RATIO)
    while reliability.record("w").agreed < Reliability.TRUST_RATIO:
        reliability.voted(["w"], [])
    assert reliability.trusted("w")


def test_a_few_lost_votes_distrust_a_worker_for_good() -> None:
    reliability = Reliability()
    newly: list[str] = []
    for _ in range(Reliability.DISTRUST_AFTER):
        newly += reliability.voted(["good"], ["bad"])[1]
    assert newly == ["bad"]
    assert reliability.distrusted("bad") and not reliability.distrusted("good")
    for _ in range(50):
        reliability.voted(["bad"], [])
    assert reliability.distrusted("bad") and not reliability.trusted("bad")


def test_replicas_go_to_different_hosts_when_there_are_enough() -> None:
    replicas = Replicas(Reliability())
    for worker, host in (("w1", "h1"), ("w2", "h1"), ("w3", "h2")):
        replicas.worker_seen(worker, host, worker)
    replicas.plan(("j", "t"), Replication(quorum=2, max_attempts=4), "w1")
    assert not replicas.accepts(("j", "t"), "w1", ["w1"])
    # Two hosts for a quorum of 2: w2 shares w1's host, w3 does not.
    assert not replicas.accepts(("j", "t"), "w2", ["w1"])
    assert replicas.accepts(("j", "t"), "w3", ["w1"])
    replicas.worker_gone("w3")
    # One host left: different workers will do.
    assert replicas.accepts(("j", "t"), "w2", ["w1"])


def test_a_second_result_of_one_worker_is_refused() -> None:
    replicas = Replicas(Reliability())
    replicas.plan(("j", "t"), Replication(quorum=2, max_attempts=4), "w1")
    first = returned_result("a1", "w1", [("o", "d", 1)], {}, 0, "", "", 1.0)
    assert replicas.cast(("j", "t"), first, running=1).state == PENDING
    again = returned_result("a2", "w1", [("o", "d", 1)], {}, 0, "", "", 2.0)
    with pytest.raises(SecondReplica, match="one worker, one result"):
        replicas.cast(("j", "t"), again, running=0)
