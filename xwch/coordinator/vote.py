"""The vote on a replicated task's results: pure functions, no state, no I/O.

Each result a worker returns is a :class:`Ballot`: who returned it and what it says (the key of
its outputs, by default their names and digests). A result counts once per worker: a second
ballot of the same worker is not counted, so no single worker can make a quorum on its own.
A set of outputs is accepted when ``quorum`` different workers returned it; the vote fails when
even the results still allowed could no longer make one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

AGREED = "agreed"
PENDING = "pending"
FAILED = "failed"


def outputs_key(outputs: Iterable[tuple[str, str]]) -> str:
    """The key of a result: one digest over its (output name, content digest) pairs, so two
    results agree when every output has the same bytes, whatever order they were sent in."""
    text = "\n".join(f"{name}\0{digest}" for name, digest in sorted(outputs))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Ballot:
    """One returned result: ``voter`` is the worker that returned it, ``key`` what it says."""

    voter: str
    key: str


@dataclass(frozen=True)
class Verdict:
    """What the ballots so far decide.

    ``state``: ``agreed`` (``key`` was returned by ``voters``, at least ``quorum`` of them),
    ``pending`` (``wanted`` more attempts should start now), or ``failed`` (``message`` says
    why).
    """

    state: str
    key: str | None = None
    voters: frozenset[str] = frozenset()
    wanted: int = 0
    message: str | None = None


def counted(ballots: Sequence[Ballot]) -> list[Ballot]:
    """The ballots that count: each worker's first."""
    seen: set[str] = set()
    kept = []
    for ballot in ballots:
        if ballot.voter not in seen:
            seen.add(ballot.voter)
            kept.append(ballot)
    return kept


def tally(ballots: Sequence[Ballot], quorum: int, max_results: int, running: int = 0) -> Verdict:
    """Decide on ``ballots`` (in the order they came) for a task needing ``quorum`` agreeing
    results out of at most ``max_results``, with ``running`` attempts still under way."""
    if quorum < 1 or max_results < quorum:
        raise ValueError(f"bad vote: quorum {quorum}, at most {max_results} results")
    votes = counted(ballots)
    supporters: dict[str, set[str]] = {}
    for ballot in votes:
        supporters.setdefault(ballot.key, set()).add(ballot.voter)
    # The first key to reach the quorum wins: dicts keep the order ballots came in.
    for key, voters in supporters.items():
        if len(voters) >= quorum:
            return Verdict(AGREED, key=key, voters=frozenset(voters))
    best = max((len(v) for v in supporters.values()), default=0)
    left = max_results - len(votes)
    if best + left < quorum:
        return Verdict(FAILED, message=no_quorum(len(votes), len(supporters)))
    # Enough more results to reach the quorum if they all agree with the largest group.
    wanted = max(0, min(quorum - best, left) - running)
    return Verdict(PENDING, wanted=wanted)


def no_quorum(results: int, different: int) -> str:
    """The message of a failed vote, as users read it in ``status`` and ``logs``."""
    plural = "result" if results == 1 else "results"
    return f"no quorum: {results} {plural}, {different} different"
