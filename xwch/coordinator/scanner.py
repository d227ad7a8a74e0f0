"""The scanner: a periodic sweep that finds what fell through the cracks and repairs it.

Each round it looks for ready tasks that nobody holds, tasks held by duplicate attempts (it keeps
the one that started first), running attempts whose worker is gone, and objects with fewer
copies than wanted (it asks another warehouse to copy them). Every repair is logged and counted;
the counts are shown by ``GET /api/v1/status``.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.coordinator.catalog import Catalog
from xwch.coordinator.copies import CopyRequest
from xwch.coordinator.tasks import TasksManager
from xwch.coordinator.workers import WorkersManager

REPAIR_ORPHANS = "ready tasks nobody held"
REPAIR_DUPLICATES = "duplicate attempts cancelled"
REPAIR_ABANDONED = "attempts of vanished workers relaunched"
REPAIR_REPLICAS = "object copies requested"


class Scanner(Service):
    """Runs the repairs every ``interval`` seconds."""

    log = Logger()

    SCAN_INTERVAL = 10.0
    # Copies asked for in one round: a lost warehouse's objects are re-replicated in waves
    # rather than all at once, which would swamp the network the platform shares.
    MAX_COPIES_PER_ROUND = 20
    # A copy not seen done after this long is asked for again (elsewhere if possible).
    COPY_TIMEOUT = 600.0

    def __init__(
        self,
        reactor: IReactorTime,
        tasks: TasksManager,
        workers: WorkersManager,
        catalog: Catalog,
        request_copy: CopyRequest | None,
        replicas: int = 2,
        interval: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._tasks = tasks
        self._workers = workers
        self._catalog = catalog
        self._request_copy = request_copy
        self.replicas = replicas
        self.interval = interval or self.SCAN_INTERVAL
        self.repairs: dict[str, int] = {
            REPAIR_ORPHANS: 0,
            REPAIR_DUPLICATES: 0,
            REPAIR_ABANDONED: 0,
            REPAIR_REPLICAS: 0,
        }
        self.rounds = 0
        # digest -> (target warehouse, its registration count then, when the copy was asked).
        self._copying: dict[str, tuple[str, int, float]] = {}
        self._loop = LoopingCall(self._round)
        self._loop.clock = reactor
        self._running: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self._running

    async def _scan_round(self) -> None:
        await self.scan()

    def _round(self) -> Deferred[None]:
        self._running = Deferred.fromCoroutine(self._scan_round())
        # A failed round is logged; the next one runs anyway (a LoopingCall stops on errors).
        self._running.addErrback(lambda f: self.log.failure("scanner round failed", f))
        return self._running

    async def scan(self) -> dict[str, int]:
        """One round of every repair; what it repaired, by kind."""
        found = {
            REPAIR_ORPHANS: await self._tasks.repair_orphans(),
            REPAIR_DUPLICATES: await self._tasks.repair_duplicates(),
            REPAIR_ABANDONED: await self._tasks.repair_abandoned(self._workers.workers.keys()),
            REPAIR_REPLICAS: await self._replicate(),
        }
        self.rounds += 1
        for kind, count in found.items():
            if count:
                self.repairs[kind] += count
                self.log.info("scanner repaired {count} {kind}", count=count, kind=kind)
        return found

    def _forget_finished_copies(self, now: float) -> None:
        """A copy is over once it landed, its target died or restarted, or it took too long."""
        for digest, (target, registration, asked) in list(self._copying.items()):
            if (
                any(w.id == target for w in self._catalog.holders(digest))
                or not self._catalog.is_alive(target)
                or self._catalog.registrations.get(target) != registration
                or now - asked >= self.COPY_TIMEOUT
            ):
                del self._copying[digest]

    async def _replicate(self) -> int:
        if self._request_copy is None:
            return 0
        now = self._reactor.seconds()
        if self._copying:
            # The warehouse copying reports to whichever member it calls: on a store shared
            # by several, maybe not this one.
            await self._catalog.learn(list(self._copying), even_known=True)
        self._forget_finished_copies(now)
        wanted = min(self.replicas, self._catalog.alive_count())
        requested = 0
        for digest, size, holders in self._catalog.under_replicated(wanted):
            if requested >= self.MAX_COPIES_PER_ROUND:
                break
            if digest in self._copying:
                continue
            target = self._catalog.choose_copy_target(holders)
            if target is None:
                continue
            self._copying[digest] = (target.id, self._catalog.registrations.get(target.id, 0), now)
            capability = self._catalog.put_capability(target, digest)
            try:
                await self._request_copy(
                    target.url, digest, size, self._catalog.sources(digest), capability
                )
            except Exception as e:
                del self._copying[digest]
                self.log.warn(
                    "warehouse {url} could not start copying {digest}: {error}",
                    url=target.url,
                    digest=digest,
                    error=e,
                )
                continue
            requested += 1
        return requested

    def status(self) -> dict[str, object]:
        return {
            "interval": self.interval,
            "rounds": self.rounds,
            "replicas": self.replicas,
            "repairs": dict(self.repairs),
            "copies_in_progress": len(self._copying),
        }
