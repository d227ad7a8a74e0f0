"""Workers' reliability: their record of results that agreed with others', and who is trusted
or distrusted.

A result that won a vote counts as agreed for its worker; one that lost counts as disagreed.
A worker is trusted after ``TRUST_AFTER`` agreed results in a row, as long as it lost at most
one vote per ``TRUST_RATIO`` it won (an ``adaptive`` task then runs once on it, and a share
``SPOT_CHECK`` of those is replicated all the same); any lost vote ends the run.
``DISTRUST_AFTER`` lost votes make it distrusted for good: it gets no more work.

Records are kept under a worker's lasting identity (its token and name: the same volunteer's
worker across registrations and restarts) and written to the store with each change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Record:
    """One worker's results in votes: ``streak`` agreed in a row since its last lost vote."""

    identity: str
    agreed: int = 0
    disagreed: int = 0
    streak: int = 0
    distrusted: bool = False


class Reliability:
    """Every worker's :class:`Record`, in memory, loaded from and written to the store."""

    # Results agreed in a row before a worker is trusted with single attempts (as BOINC's
    # adaptive replication, a run of valid results, so one lost vote costs the trust at once).
    # A worker wrong one time in five makes such a run from its start one time in a hundred.
    TRUST_AFTER = 20
    # And votes won per vote lost, over its whole record: a worker that is often wrong does
    # not earn trust back with one lucky run.
    TRUST_RATIO = 50
    # The least share of a trusted worker's single attempts that are replicated anyway.
    SPOT_CHECK = 0.1
    # Lost votes after which a worker is distrusted: one may be bad luck (a flipped bit), a
    # few are a pattern.
    DISTRUST_AFTER = 3

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: dict[str, Record] = {r.identity: r for r in records}

    def record(self, identity: str) -> Record:
        return self._records.get(identity) or Record(identity)

    def trusted(self, identity: str) -> bool:
        r = self.record(identity)
        return (
            not r.distrusted
            and r.streak >= self.TRUST_AFTER
            and r.disagreed * self.TRUST_RATIO <= r.agreed
        )

    def distrusted(self, identity: str) -> bool:
        return self.record(identity).distrusted

    def voted(
        self, agreed: Iterable[str], disagreed: Iterable[str]
    ) -> tuple[list[Record], list[str]]:
        """Count one decided vote; returns the changed records and the identities that have
        just become distrusted."""
        changed: dict[str, Record] = {}
        newly: list[str] = []
        for identity in agreed:
            r = changed.get(identity) or self.record(identity)
            changed[identity] = replace(r, agreed=r.agreed + 1, streak=r.streak + 1)
        for identity in disagreed:
            r = changed.get(identity) or self.record(identity)
            losses = r.disagreed + 1
            distrusted = r.distrusted or losses >= self.DISTRUST_AFTER
            if distrusted and not r.distrusted:
                newly.append(identity)
            changed[identity] = replace(r, disagreed=losses, streak=0, distrusted=distrusted)
        self._records.update(changed)
        return list(changed.values()), newly

    def all(self) -> Mapping[str, Record]:
        return self._records
