"""Several coordinators on one PostgreSQL store: which one serves, and what the others do.

The member that holds the lead group (``g1``) serves the platform: it builds its managers from
the store when it takes the group (the same recovery as a restarted coordinator's) and makes
every change of tasks and attempts under that group's epoch, so that the store refuses the
changes of a member that lost the group without knowing it yet (paused past its lease, say).
The moment it learns it lost the group (its renewal found the group taken, or the store
refused a change) it drops its managers and becomes a standby.

A standby answers every request by sending the caller to the member serving, with a
``307 Temporary Redirect`` to the same path there (a redirect that keeps the method and the
body); while no member serves (the one serving died and its lease has not run out), it holds
the request until one does, so that a member's death costs callers a wait, not an error.
Sharing the work of one platform between members, group by group, builds on this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.coordinator.groups import GroupLocks
from xwch.coordinator.managers import Managers
from xwch.coordinator.members import Membership
from xwch.coordinator.web import write_json
from xwch.http import UNREACHABLE_HEADER
from xwch.store.group_locks import Fence, NotHeld

LEAD_GROUP = "g1"


class Leadership(Service):
    """Serves the platform while this member holds the lead group; a standby otherwise."""

    log = Logger()

    # How often a standby with a request waiting looks for the member serving.
    LOOK_INTERVAL = 0.25
    # Reloading from a store that does not answer: again after this, doubling, at most MAX.
    REBUILD_BACKOFF = 0.5
    REBUILD_BACKOFF_MAX = 5.0

    def __init__(
        self,
        reactor: IReactorTime,
        membership: Membership,
        groups: GroupLocks,
        build: Callable[[Fence], Awaitable[Managers]],
        attach: Callable[[Managers | None], None],
    ) -> None:
        self._reactor = reactor
        self._membership = membership
        self._groups = groups
        self._build = build
        self._attach = attach
        self.managers: Managers | None = None
        # The epoch whose managers are being built, if any.
        self._building: int | None = None
        groups.on_gained.append(self._gained)
        groups.on_lost.append(self._lost)

    # Taking and losing the lead

    def _gained(self, group: str, epoch: int) -> None:
        if group != LEAD_GROUP or not self.running:
            return
        self._building = epoch
        fence = Fence(group, self._membership.id, epoch)
        d = ensureDeferred(self._take_lead(fence))
        d.addErrback(self._could_not_build, fence)

    async def _take_lead(self, fence: Fence) -> None:
        self.log.info(
            "leadership: holding {group}: loading the platform from the store", group=fence.group
        )
        managers = await self._build(fence)
        if not self.running or self._groups.held.get(fence.group) != fence.epoch:
            self.log.info("leadership: lost {group} while loading; standing by", group=fence.group)
            return  # never started: nothing to stop
        self._building = None
        managers.tasks.on_fenced.append(self._refused)
        managers.tasks.on_unwritten.append(lambda error: self._unwritten(error, fence))
        self.managers = managers
        self._attach(managers)
        managers.startService()
        self.log.info("leadership: serving the platform (epoch {epoch})", epoch=fence.epoch)

    def _could_not_build(self, failure: Failure, fence: Fence) -> None:
        # Let the group go: another member, or this one at its next round, tries again.
        self.log.warn("leadership: could not load the platform: {error}", error=failure.value)
        self._building = None
        self._groups.let_go(fence.group)

    def _unwritten(self, error: BaseException, fence: Fence) -> None:
        """A change could not be written (the store restarting, say): memory is ahead of the
        store. Still holding the lead, rebuild the managers from the store once it answers."""
        if self.managers is None or self._building is not None:
            return  # already rebuilding
        self.log.warn(
            "leadership: a change could not be written ({error}); reloading from the store",
            error=error,
        )
        managers, self.managers = self.managers, None
        self._attach(None)
        _drop(managers)
        self._building = fence.epoch
        d = ensureDeferred(self._rebuild(fence))
        d.addErrback(self._could_not_build, fence)

    async def _rebuild(self, fence: Fence) -> None:
        delay = self.REBUILD_BACKOFF
        while self.running and self._groups.held.get(fence.group) == fence.epoch:
            try:
                await self._take_lead(fence)
                return
            except Exception as e:
                self.log.warn(
                    "leadership: cannot reload from the store ({error}); again in {delay:.1f} s",
                    error=e,
                    delay=delay,
                )
            await deferLater(self._reactor, delay, lambda: None)
            delay = min(delay * 2, self.REBUILD_BACKOFF_MAX)
        self._building = None

    def _refused(self, refused: NotHeld) -> None:
        self.log.warn("leadership: the store refused a change ({why}); standing by", why=refused)
        self._groups.let_go(LEAD_GROUP)

    def _lost(self, group: str) -> None:
        if group != LEAD_GROUP:
            return
        self._building = None
        managers, self.managers = self.managers, None
        if managers is None:
            return
        self._attach(None)
        self.log.warn("leadership: lost {group}; the platform is served elsewhere now", group=group)
        _drop(managers)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        managers, self.managers = self.managers, None
        if managers is None:
            return None
        return _drop(managers)

    # Finding the member serving

    async def serving_url(self, patience: float, avoid: frozenset[str] = frozenset()) -> str | None:
        """Where the platform is served: None when here; else the serving member's URL.
        Waits up to ``patience`` seconds for some member to serve; raises NoneServing.

        ``avoid``: URLs the caller found not answering. The member holding the lead at one of
        them now is dead and is waited out; a member that takes the lead later at the same
        address (the dead one started again) is a new process, and is not avoided."""
        deadline = self._reactor.seconds() + patience
        dead: set[str] | None = None
        while True:
            if self.managers is not None:
                return None
            holder = await self._holder()
            if dead is None:
                dead = {holder[0]} if holder is not None and holder[1] in avoid else set()
            if holder is not None and holder[0] not in dead:
                return holder[1]
            if self._reactor.seconds() >= deadline:
                raise NoneServing()
            await deferLater(self._reactor, self.LOOK_INTERVAL, lambda: None)

    async def _holder(self) -> tuple[str, str] | None:
        """(id, URL) of the live member holding the lead, other than this one."""
        if self._building is not None:
            return None  # this member is about to serve
        locks = await self._groups.locks()
        holder = next((lock.holder for lock in locks if lock.id == LEAD_GROUP and lock.held), None)
        if holder is None or holder == self._membership.id:
            return None
        for member in await self._membership.members():
            # At this member's own address, the holder is its predecessor, dead (a restarted
            # process is a new member): the group is free once its lease runs out.
            if member.id == holder and member.live and member.url != self._membership.url():
                return member.id, member.url.rstrip("/")
        return None


def _drop(managers: Managers) -> Deferred[None] | None:
    """Stop managers whose memory is no longer trusted: nothing they decided is written."""
    managers.tasks.close()
    return managers.stopService()  # type: ignore[no-any-return]


class NoneServing(Exception):
    """No member serves the platform (one is dying and its lease has not run out)."""


class ApiSwitch(Resource):
    """Everything under ``/api``: served by this member's managers while it leads, else sent
    to the member that does."""

    isLeaf = True
    log = Logger()

    def __init__(self, leadership: Leadership, patience: Callable[[], float]) -> None:
        super().__init__()
        self._leadership = leadership
        self._patience = patience

    def render(self, request: Request) -> int:
        managers = self._leadership.managers
        if managers is not None:
            return managers.router.render(request)  # type: ignore[no-any-return]
        d = ensureDeferred(self._elsewhere(request))
        d.addErrback(
            lambda f: self.log.failure("standby: cannot answer {path}", f, path=request.path)
        )
        return NOT_DONE_YET

    async def _elsewhere(self, request: Request) -> None:
        raw = request.getHeader(UNREACHABLE_HEADER) or b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        avoid = frozenset(u.strip().rstrip("/") for u in text.split(",") if u.strip())
        try:
            url = await self._leadership.serving_url(self._patience(), avoid)
        except NoneServing:
            if not request.finished and request.channel is not None:
                request.setHeader(b"retry-after", b"2")
                write_json(
                    request,
                    503,
                    {
                        "error": "no_coordinator_serving",
                        "message": "no coordinator serves the platform right now; retry",
                        "retry_after": 2,
                    },
                )
            return
        if request.finished or request.channel is None:
            return  # the caller went away meanwhile
        managers = self._leadership.managers
        if url is None and managers is not None:
            managers.router.render(request)
            return
        assert url is not None  # serving_url answers None only when this member serves
        location = url.rstrip("/").encode("utf-8") + (request.uri or b"/")
        request.setHeader(b"location", location)
        write_json(
            request,
            307,
            {
                "error": "elsewhere",
                "message": f"this coordinator stands by; the platform is served at {url}",
                "url": url,
            },
        )
