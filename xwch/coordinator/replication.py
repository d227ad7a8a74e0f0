"""Replicated tasks: which worker may take one more replica, and the ballots their results cast.

The tasks' manager asks :class:`Replicas` whether a worker may take a replica of a task (a
worker takes at most one replica of a task; replicas go to different hosts when enough hosts
are live), how many more replicas a task wants now, and, for each result, what the vote
(:mod:`xwch.coordinator.vote`) decides. An ``adaptive`` task is planned when its first attempt
starts: a single attempt on a trusted worker (with a random share checked all the same), two
agreeing results otherwise (:mod:`xwch.coordinator.reliability`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from xwch.coordinator.reliability import Reliability
from xwch.coordinator.vote import Ballot, Verdict, outputs_key, tally
from xwch.dagreplication import Replication
from xwch.errors import XwchError

TaskKey = tuple[str, str]


class SecondReplica(XwchError):
    """A worker returned a second result for one task: one worker, one vote."""


@dataclass(frozen=True)
class Returned:
    """A result kept until the vote decides, as the worker sent it."""

    attempt: str
    worker: str
    key: str
    outputs: tuple[tuple[str, str, int], ...]  # (name, digest, size)
    inline: dict[str, bytes]
    exit_code: int | None
    stdout: str
    stderr: str
    ended: float
    # It continued checkpoints another worker saved: it depends on that worker too, so it
    # teaches nothing of its own worker's reliability.
    shared: bool = False


@dataclass
class TaskVote:
    """One replicated task's plan and the results it gathered so far."""

    quorum: int
    max_results: int
    # An adaptive task given to a trusted worker alone: accepted on its word, unconfirmed.
    single: bool = False
    returned: list[Returned] = field(default_factory=list)
    # A check of a result accepted unconfirmed (its worker lost a vote since): that result,
    # and the workers that may not take part (they have said their word).
    checking: Returned | None = None
    excluded: frozenset[str] = frozenset()
    # With a compare program: results found to agree share a class, named by one of their
    # keys; the pairs of classes compared already, and those being compared (by the id of
    # the comparing task).
    aliases: dict[str, str] = field(default_factory=dict)
    compared: set[frozenset[str]] = field(default_factory=set)
    comparing: dict[str, frozenset[str]] = field(default_factory=dict)

    def class_of(self, key: str) -> str:
        while key in self.aliases:
            key = self.aliases[key]
        return key

    def merge(self, one: str, other: str) -> None:
        """A compare program found these two results to agree."""
        a, b = self.class_of(one), self.class_of(other)
        if a != b:
            # The class keeps the key of the result that came first.
            order = [self.class_of(r.key) for r in self.returned]
            first, second = (a, b) if order.index(a) <= order.index(b) else (b, a)
            self.aliases[second] = first

    def ballots(self) -> list[Ballot]:
        return [Ballot(r.worker, self.class_of(r.key)) for r in self.returned]

    def representatives(self) -> dict[str, Returned]:
        """The first result of each class, in the order results came."""
        firsts: dict[str, Returned] = {}
        for r in self.returned:
            firsts.setdefault(self.class_of(r.key), r)
        return firsts

    def pairs_to_compare(self) -> list[tuple[Returned, Returned]]:
        """Classes not compared yet (nor being compared), two by two."""
        firsts = list(self.representatives().items())
        busy = set(self.comparing.values())
        pairs = []
        for i, (key, one) in enumerate(firsts):
            for other_key, other in firsts[i + 1 :]:
                pair = frozenset((key, other_key))
                if pair not in self.compared and pair not in busy:
                    pairs.append((one, other))
        return pairs


class Replicas:
    """The votes of replicated tasks under way, and the hosts of the workers."""

    def __init__(self, reliability: Reliability, chance: random.Random | None = None) -> None:
        self.reliability = reliability
        self.chance = chance or random.Random()
        self._votes: dict[TaskKey, TaskVote] = {}
        # worker id -> its host (the address it registered with) and its lasting identity.
        self._hosts: dict[str, str] = {}
        self._identities: dict[str, str] = {}
        self._live: set[str] = set()
        # How many live workers each host has: the number of distinct hosts, kept as they come
        # and go rather than counted at each pick.
        self._live_hosts: Counter[str] = Counter()
        # Results accepted on one trusted worker's word, by its identity, while their jobs
        # run: checked again if that worker loses a vote.
        self.unconfirmed: dict[str, dict[TaskKey, Returned]] = {}

    # Workers

    def worker_seen(self, worker_id: str, host: str, identity: str) -> None:
        self.worker_gone(worker_id)
        self._hosts[worker_id] = host
        self._identities[worker_id] = identity
        self._live.add(worker_id)
        self._live_hosts[host] += 1

    def worker_gone(self, worker_id: str) -> None:
        # Its host and identity are kept: a late result of its may still be counted.
        if worker_id in self._live:
            self._live.discard(worker_id)
            host = self._hosts[worker_id]
            self._live_hosts[host] -= 1
            if not self._live_hosts[host]:
                del self._live_hosts[host]

    def live_workers(self) -> set[str]:
        return set(self._live)

    def identity(self, worker_id: str) -> str:
        """What reliability is kept under: the same volunteer's worker across registrations."""
        return self._identities.get(worker_id, worker_id)

    def distrusted(self, worker_id: str) -> bool:
        return self.reliability.distrusted(self.identity(worker_id))

    # Tasks

    def vote_of(self, key: TaskKey) -> TaskVote | None:
        return self._votes.get(key)

    def plan(self, key: TaskKey, replication: Replication, worker_id: str) -> TaskVote:
        """The task's vote, made when its first attempt starts on ``worker_id``."""
        vote = self._votes.get(key)
        if vote is None:
            quorum = replication.quorum
            single = False
            if replication.adaptive and self.reliability.trusted(self.identity(worker_id)):
                # A trusted worker's result is still checked now and then, at random, so
                # that trust once earned cannot be spent without being noticed.
                single = self.chance.random() >= self.reliability.SPOT_CHECK
                quorum = 1 if single else quorum
            vote = TaskVote(quorum, max(quorum, replication.max_attempts), single=single)
            self._votes[key] = vote
        return vote

    def plan_check(self, key: TaskKey, replication: Replication, suspect: Returned) -> TaskVote:
        """Check a result accepted on ``suspect``'s word: a full quorum of other workers."""
        quorum = max(replication.quorum, 2)
        vote = TaskVote(
            quorum,
            max(quorum, replication.max_attempts),
            checking=suspect,
            excluded=frozenset({suspect.worker}),
        )
        self._votes[key] = vote
        return vote

    def accepts(self, key: TaskKey, worker_id: str, holders: Collection[str]) -> bool:
        """Whether ``worker_id`` may take a replica, ``holders`` running the others (or having
        contributed to their checkpoints)."""
        vote = self._votes.get(key)
        taken = set(holders)
        if vote is not None:
            taken |= {r.worker for r in vote.returned} | vote.excluded
        if worker_id in taken:
            return False
        if vote is None or len(self._live_hosts) < vote.quorum:
            return True  # too few hosts: different workers will do
        host = self._hosts.get(worker_id, worker_id)
        return host not in {self._hosts.get(w, w) for w in taken}

    def wanted(self, key: TaskKey, running: int) -> int:
        """How many more replicas should start now (0 for a task that is not replicated)."""
        vote = self._votes.get(key)
        if vote is None or vote.comparing:
            # While a compare program runs, its answer may settle the vote.
            return 0
        return tally(vote.ballots(), vote.quorum, vote.max_results, running).wanted

    def check_voter(self, key: TaskKey, worker_id: str) -> None:
        """Raise :class:`SecondReplica` if ``worker_id`` already returned a result for ``key``."""
        vote = self._votes.get(key)
        if vote is not None and any(r.worker == worker_id for r in vote.returned):
            raise SecondReplica(
                f"worker {worker_id} already returned a result for task {key[1]} "
                f"of job {key[0]}: one worker, one result"
            )

    def cast(self, key: TaskKey, returned: Returned, running: int) -> Verdict:
        """Count a result; raises :class:`SecondReplica` for a worker that already voted."""
        self.check_voter(key, returned.worker)
        vote = self._votes[key]
        vote.returned.append(returned)
        return self.verdict(key, running)

    def verdict(self, key: TaskKey, running: int) -> Verdict:
        vote = self._votes[key]
        return tally(vote.ballots(), vote.quorum, vote.max_results, running)

    def forget(self, key: TaskKey) -> TaskVote | None:
        return self._votes.pop(key, None)

    def forget_job(self, job_id: str) -> None:
        for key in [k for k in self._votes if k[0] == job_id]:
            del self._votes[key]
        for results in self.unconfirmed.values():
            for key in [k for k in results if k[0] == job_id]:
                del results[key]


def returned_result(
    attempt: str,
    worker: str,
    outputs: Collection[tuple[str, str, int]],
    inline: dict[str, bytes],
    exit_code: int | None,
    stdout: str,
    stderr: str,
    ended: float,
) -> Returned:
    """A successful attempt's result as a ballot of the vote."""
    ordered = tuple(sorted(outputs))
    key = outputs_key((name, digest) for name, digest, _ in ordered)
    return Returned(attempt, worker, key, ordered, inline, exit_code, stdout, stderr, ended)
