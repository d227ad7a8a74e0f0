"""This coordinator as a member of the platform that shares its store.

Once it listens, a member writes its row in the store (an id of its own, the URL it answers at)
and renews it every ``lease / RENEWALS_PER_LEASE`` seconds, with how many workers it knows and
attempts it runs; stopping cleanly, it deletes the row. A member silent for ``lease`` seconds is
lost: its row stays a while for ``xwch-client coordinators`` to show. Joining and leaving are
announced (``store/notices.py``), so that the others spread the groups again at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.store import members
from xwch.store.database import Database
from xwch.store.members import MemberRecord
from xwch.store.notices import MEMBERS, Notices

# How long a silent member keeps what it holds (``--lease``).
DEFAULT_LEASE = 10.0


class Membership(Service):
    """Registers this coordinator in the store once ``listening`` fires, and keeps it there."""

    log = Logger()

    # Renewals per lease: two may fail (a database restarting) before the member is lost.
    RENEWALS_PER_LEASE = 3
    # How long stopping waits to delete this member's row.
    LEAVE_TIMEOUT = 5.0

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        listening: Callable[[], Deferred[Any]],
        url: Callable[[], str],
        load: Callable[[], tuple[int, int]],
        lease: float = DEFAULT_LEASE,
        notices: Notices | None = None,
    ) -> None:
        self.id = "c-" + secrets.token_hex(4)
        self._notices = notices
        self._joined = False
        self.lease = lease
        self._reactor = reactor
        self._db = db
        self._listening = listening
        self._url = url
        # (workers known, attempts running), told at each renewal.
        self._load = load
        self._renewing: LoopingCall | None = None
        self._failing = False

    def startService(self) -> None:
        super().startService()
        # Not listening (the port taken, say): the coordinator stops; nothing to renew.
        self._listening().addCallbacks(self._start_renewing, lambda _: None)

    def _start_renewing(self, _: object) -> None:
        if not self.running:
            return
        self._renewing = LoopingCall(self._renew)
        self._renewing.clock = self._reactor
        self._renewing.start(self.lease / self.RENEWALS_PER_LEASE, now=True)

    def _renew(self) -> Deferred[None]:
        d = ensureDeferred(self._renew_once())
        # Logged, not raised: a LoopingCall stops for good on an error.
        d.addErrback(self._renewal_failed)
        return d

    async def _renew_once(self) -> None:
        workers, running = self._load()
        await self._db.write(
            members.renew_thd,
            self.id,
            self._url(),
            workers,
            running,
            self.lease,
            self._reactor.seconds(),
        )
        if not self._joined:
            self._joined = True
            self._announce()
        if self._failing:
            self._failing = False
            self.log.info("member {id}: renewing in the store again", id=self.id)

    def _renewal_failed(self, failure: object) -> None:
        if not self._failing:
            self._failing = True
            self.log.warn(
                "member {id}: cannot renew in the store ({error}); trying again",
                id=self.id,
                error=getattr(failure, "value", failure),
            )

    def stopService(self) -> Deferred[None] | None:
        if self.running:
            super().stopService()
        if self._renewing is None:
            return None
        self._renewing.stop()
        self._renewing = None
        d = self._db.write(members.leave_thd, self.id)
        d.addCallback(lambda _: self._announce())
        # A store that does not answer must not hold the stop: the others see this member
        # lost after its lease instead.
        d.addTimeout(self.LEAVE_TIMEOUT, self._reactor)
        d.addErrback(
            lambda f: self.log.warn("member {id}: could not leave: {e}", id=self.id, e=f.value)
        )
        return d

    def _announce(self) -> None:
        """Tell the other members that the live members changed (a hint: not awaited, and a
        lost one costs them only a round's wait)."""
        if self._notices is not None:
            self._notices.publish(MEMBERS).addErrback(
                lambda f: self.log.warn("member {id}: no notice sent: {e}", id=self.id, e=f.value)
            )

    def url(self) -> str:
        """Where this member answers."""
        return self._url()

    def members(self) -> Deferred[list[MemberRecord]]:
        """Every member the store knows, live ones first."""
        return self._db.read(members.members_thd, self.lease, self._reactor.seconds())
