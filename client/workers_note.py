"""What the workers mean for a job being followed, in a few words for its progress line.

A job can sit at ``ready 8`` because every worker is suspended by its volunteer's preferences,
or because no worker is live at all: the progress display says so, with the reason the
workers gave, rather than leave the user guessing. Nothing is said while the workers compute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from twisted.internet.interfaces import IReactorTime

from xwch.errors import ApiError, Unreachable
from xwch.protocol.client import WorkerInfo
from xwch.protocol.codec import ProtocolError

from .clock import now

# States of docs/cli.md's `workers` that compute nothing for the job.
LOST = "lost"
SUSPENDED = "suspended"
QUARANTINED = "quarantined"
DISTRUSTED = "distrusted"


def workers_note(workers: Sequence[WorkerInfo]) -> str | None:
    """``"2/2 workers suspended: the computer is in use"``, ``"no live worker"``, or None when
    the live workers compute."""
    live = [w for w in workers if w.state != LOST]
    if not live:
        return "no live worker: tasks wait until one registers"
    parts = []
    suspended = [w for w in live if w.state == SUSPENDED]
    if suspended:
        reasons = Counter(w.reason or "no reason given" for w in suspended)
        (reason, _), *others = reasons.most_common()
        more = f" (and {len(others)} other reason(s))" if others else ""
        parts.append(f"{len(suspended)}/{len(live)} workers suspended: {reason}{more}")
    quarantined = sum(1 for w in live if w.state == QUARANTINED)
    if quarantined:
        parts.append(f"{quarantined}/{len(live)} workers quarantined")
    distrusted = sum(1 for w in live if w.state == DISTRUSTED)
    if distrusted:
        parts.append(f"{distrusted}/{len(live)} workers distrusted")
    return "; ".join(parts) or None


class WorkersWatch:
    """The workers' note, asked of the coordinator at most once per ``INTERVAL``.

    The workers change slowly compared with a job's counts; asking for them at every poll
    would double the requests of every follower. A coordinator that cannot answer (busy, an
    old one) leaves the note as it was: the job is what is being followed.
    """

    INTERVAL = 5.0

    def __init__(
        self, reactor: IReactorTime, workers: Callable[[], Awaitable[list[WorkerInfo]]]
    ) -> None:
        self._reactor = reactor
        self._workers = workers
        self._asked: float | None = None
        self.note: str | None = None

    async def update(self) -> str | None:
        """The note, asked again if INTERVAL has passed since it was last asked."""
        moment = now(self._reactor)
        if self._asked is not None and moment - self._asked < self.INTERVAL:
            return self.note
        self._asked = moment
        try:
            self.note = workers_note(await self._workers())
        except (ApiError, Unreachable, ProtocolError):
            pass
        return self.note
