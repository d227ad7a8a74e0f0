"""The workers' manager: registered workers, their signals, and the notice of lost ones.

Handles the four signals of the XtremWeb-CH design: Register Request (host facts), Work Request
(performance and free slots), Work Alive (running attempts) and Work Result. A worker whose
Work Alive signals stop for ``alive_timeout`` is declared lost, and its attempts are relaunched.
A worker that its volunteer's preferences suspend says so, and why, in its Register Request and
every Work Alive: it is listed ``suspended`` with that reason until it says it computes again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.coordinator.communication import CommunicationManager
from xwch.coordinator.scheduler import DEFAULT_SITE, WorkerView
from xwch.coordinator.tasks import TasksManager
from xwch.errors import XwchError
from xwch.protocol.worker import Assignment, AttemptResult, HostFacts, Policy, RunningAttempt
from xwch.store import nodes
from xwch.store.database import Database
from xwch.store.placement import FIRST_GROUP
from xwch.store.records import TokenRecord, WorkerRecord

WORKER_ALIVE = "alive"
WORKER_LOST = "lost"
WORKER_QUARANTINED = "quarantined"
WORKER_SUSPENDED = "suspended"
# Lost too many votes on replicated results (reliability.py): never given work again.
WORKER_DISTRUSTED = "distrusted"


class UnknownWorker(XwchError):
    """The worker is not registered, or was declared lost: it must register again."""


class WrongOwner(XwchError):
    """A worker id used with a token that did not register it."""


class WorkersManager(Service):
    """Registered workers and their Register, Work, Alive and Result signals."""

    log = Logger()

    # How often a worker sends Work Alive; it is told so when it registers.
    ALIVE_INTERVAL = 5.0
    # Silent this long (three missed beats): the worker is lost.
    ALIVE_TIMEOUT = 3 * ALIVE_INTERVAL
    # How often last-heard times are written: heartbeats are frequent, their record need not be.
    FLUSH_INTERVAL = 10.0
    # The most attempts one Work Request gets, per slot of the worker: a worker on short tasks
    # refills, in one request, its free slots and the attempts it holds ahead (worker/service.py).
    MOST_PER_SLOT = 2

    def __init__(
        self,
        reactor: IReactorTime,
        db: Database,
        tasks: TasksManager,
        communication: CommunicationManager,
        alive_interval: float | None = None,
        alive_timeout: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._db = db
        self._tasks = tasks
        self._communication = communication
        self.alive_interval = alive_interval or self.ALIVE_INTERVAL
        self.alive_timeout = alive_timeout or 3 * self.alive_interval
        self.workers: dict[str, WorkerRecord] = {}
        # Token of each worker declared lost: back under a new id, it speaks for its attempts.
        self._lost_owners: dict[str, int] = {}
        self._heard: dict[str, float] = {}
        # Why each suspended worker computes nothing, as it last said. In memory only: a
        # coordinator started again hears it with the next Work Alive, seconds later.
        self.suspended: dict[str, str] = {}
        # The keys each worker trusts (signed programs), as its Register Request said; absent:
        # it runs any program. In memory only: a worker that trusts keys refuses unsigned work
        # on its own side anyway.
        self.trusted: dict[str, frozenset[str]] = {}
        # Workers given no new work: they move to another member's group once their attempts
        # end (lending.py).
        self.draining: set[str] = set()
        self._checker = LoopingCall(self._check_and_flush)
        self._checker.clock = reactor
        self._checking: Deferred[None] | None = None

    async def load(self) -> None:
        """Workers alive before a restart get a full timeout to show up again."""
        now = self._reactor.seconds()
        for w in await self._db.read(nodes.active_workers_thd, self._tasks.groups):
            self._known(replace(w, last_heard=now))

    def _known(self, w: WorkerRecord) -> None:
        self.workers[w.id] = w
        if w.trusted_keys:
            self.trusted[w.id] = frozenset(w.trusted_keys)
        self._tasks.scheduler.worker_seen(self._view(w))
        self._seen_by_replicas(w)

    # Workers changing groups (several coordinators: lending.py, routing.py)

    async def adopt(self, worker_id: str) -> bool:
        """Take on a live worker the store puts in a group held here (it was moved here, or
        registered at another member): whether it is known now."""
        if worker_id in self.workers:
            return True
        record = await self._db.read(nodes.worker_thd, worker_id)
        if worker_id in self.workers:
            return True  # taken on by another request meanwhile
        held = self._tasks.groups
        if record is None or record.state != WORKER_ALIVE:
            return False
        if held is not None and (record.group or FIRST_GROUP) not in held:
            return False
        self._known(replace(record, last_heard=self._reactor.seconds()))
        self.log.info(
            "worker {id} ({name}) joins a group held here", id=record.id, name=record.name
        )
        return True

    def hand_over(self, worker_ids: Sequence[str]) -> None:
        """Forget workers moved to a group held elsewhere (their store row says where): no
        attempt of theirs runs here. Their new holder writes when they were last heard."""
        for worker_id in worker_ids:
            worker = self.workers.pop(worker_id, None)
            self._heard.pop(worker_id, None)
            if worker is None:
                continue
            self.suspended.pop(worker_id, None)
            self.trusted.pop(worker_id, None)
            self.draining.discard(worker_id)
            self._tasks.scheduler.worker_gone(worker_id)
            self._tasks.replicated.replicas.worker_gone(worker_id)

    def startService(self) -> None:
        super().startService()
        self._checker.start(min(self.alive_interval, self.FLUSH_INTERVAL), now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._checker.running:
            self._checker.stop()
        return self._checking

    # Signals

    async def register(
        self, token: TokenRecord, facts: HostFacts, group: str | None = None
    ) -> WorkerRecord:
        now = self._reactor.seconds()
        record = WorkerRecord(
            id="k" + secrets.token_hex(6),
            token_id=token.id,
            name=facts.name,
            address=facts.address,
            platform=facts.platform,
            cores=facts.cores,
            memory=facts.memory,
            slots=facts.slots,
            performance=facts.performance,
            site=facts.site,
            state=WORKER_ALIVE,
            registered=now,
            last_heard=now,
            trusted_keys=tuple(facts.trusted_keys),
            group=self._tasks.place(group),
        )
        await self._db.write(nodes.add_worker_thd, record)
        await self._replaced_by(record, token, facts.replaces)
        self.workers[record.id] = record
        if facts.trusted_keys:
            self.trusted[record.id] = frozenset(facts.trusted_keys)
        self._note_suspension(record.id, facts.suspended)
        if facts.cached:
            self._tasks.scheduler.worker_cache(record.id, facts.cached)
        self._tasks.scheduler.worker_seen(self._view(record))
        self._seen_by_replicas(record)
        self.log.info(
            "worker {id} registered: {name} ({platform}, {slots} slots)",
            id=record.id,
            name=record.name,
            platform=record.platform,
            slots=record.slots,
        )
        return record

    async def _replaced_by(
        self, record: WorkerRecord, token: TokenRecord, replaces: str | None
    ) -> None:
        """A worker started again names its previous registration: that process is gone, so
        its attempts go to others now, not once its silence times out. Only a live worker of
        the same token and name is replaced (a worker cannot push out another's)."""
        old = self.workers.get(replaces) if replaces is not None else None
        if old is None or old.token_id != token.id or old.name != record.name:
            return
        assert replaces is not None
        await self._declare_lost(replaces, f"started again as {record.id}", record.registered)
        await self._tasks.workers_lost([replaces])

    def _seen_by_replicas(self, worker: WorkerRecord) -> None:
        # Replicas of a task go to different hosts; reliability outlives registrations under
        # the volunteer's token and the worker's name.
        identity = f"{worker.token_id}/{worker.name}"
        self._tasks.replicated.replicas.worker_seen(worker.id, worker.address, identity)

    def get(self, worker_id: str, token: TokenRecord) -> WorkerRecord:
        """The worker, heard just now; raises if unknown, lost, or not this token's."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise UnknownWorker(f"worker {worker_id} is not registered (or was declared lost)")
        if worker.token_id != token.id:
            raise WrongOwner(f"worker {worker_id} was registered with another token")
        self._heard[worker_id] = self._reactor.seconds()
        return worker

    async def work_request(
        self,
        token: TokenRecord,
        worker_id: str,
        performance: float,
        free_slots: int,
        idle_slots: int | None = None,
    ) -> list[Assignment]:
        worker = self.get(worker_id, token)
        if worker_id in self.draining:
            return []
        if performance > 0 and performance != worker.performance:
            worker = replace(worker, performance=performance)
            self.workers[worker_id] = worker
        view = self._view(worker)
        slots = min(free_slots, worker.slots * self.MOST_PER_SLOT)
        return await self._tasks.assign(
            view,
            worker.name,
            worker.site,
            slots,
            workers_alive=len(self.workers),
            idle_slots=idle_slots,
        )

    def _same_owner(self, token: TokenRecord) -> Callable[[str], bool]:
        def same_owner(other_worker_id: str) -> bool:
            return self._lost_owners.get(other_worker_id) == token.id

        return same_owner

    async def alive(
        self,
        token: TokenRecord,
        worker_id: str,
        running: Sequence[RunningAttempt],
        evicted: Sequence[str] = (),
        waiting: Sequence[str] = (),
        suspended: str | None = None,
    ) -> tuple[list[str], Policy]:
        self.get(worker_id, token)
        self._note_suspension(worker_id, suspended)
        if evicted:
            self._tasks.scheduler.objects_evicted(worker_id, evicted)
        # Three beats: an attempt given since the worker's last Work Alive is not missing yet.
        cancels = await self._tasks.alive(
            worker_id,
            [r.attempt for r in running],
            self._same_owner(token),
            grace=3 * self.alive_interval,
            waiting=waiting,
        )
        return cancels, self._communication.policy()

    async def result(self, token: TokenRecord, worker_id: str, result: AttemptResult) -> bool:
        self.get(worker_id, token)
        return await self._tasks.record_result(worker_id, result, self._same_owner(token))

    async def give_back(self, token: TokenRecord, worker_id: str, attempts: Sequence[str]) -> None:
        self.get(worker_id, token)
        await self._tasks.give_back(worker_id, attempts)

    def live_platforms(self) -> set[str]:
        """The platforms of the workers alive now."""
        return {w.platform for w in self.workers.values() if w.state == WORKER_ALIVE}

    def live_trust(self) -> set[tuple[str, frozenset[str]]]:
        """The platform and trusted keys of each worker alive now (none: it runs anything)."""
        return {
            (w.platform, self.trusted.get(w.id, frozenset()))
            for w in self.workers.values()
            if w.state == WORKER_ALIVE
        }

    def _view(self, worker: WorkerRecord) -> WorkerView:
        return replace(_view(worker), trusted_keys=self.trusted.get(worker.id, frozenset()))

    def _note_suspension(self, worker_id: str, reason: str | None) -> None:
        was = self.suspended.get(worker_id)
        if reason == was:
            return
        if reason is None:
            del self.suspended[worker_id]
            self.log.info("worker {id} computes again", id=worker_id)
            return
        self.suspended[worker_id] = reason
        if was is None:
            self.log.info("worker {id} suspended: {reason}", id=worker_id, reason=reason)

    def state_of(self, worker_id: str) -> str:
        """A live worker's state as users see it: quarantined (the coordinator keeps work from
        it), suspended (its volunteer does), or alive."""
        if self._tasks.replicated.replicas.distrusted(worker_id):
            return WORKER_DISTRUSTED
        if self._tasks.health.is_quarantined(worker_id):
            return WORKER_QUARANTINED
        if worker_id in self.suspended:
            return WORKER_SUSPENDED
        return WORKER_ALIVE

    def busy_slots(self, worker_id: str) -> int:
        """Slots of a live worker holding an attempt: those it holds, at most its slots (it may
        hold more, fetched ahead, waiting for a slot)."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return 0
        return min(worker.slots, len(self._tasks.running_on(worker_id)))

    def list(self) -> list[WorkerRecord]:
        return [
            replace(w, last_heard=self._heard.get(w.id, w.last_heard), state=self.state_of(w.id))
            for w in self.workers.values()
        ]

    # Lost workers

    def _check_and_flush(self) -> Deferred[None]:
        self._checking = ensureDeferred(self._check())
        # A failed round is logged, not raised: a LoopingCall stops for good on an error, and
        # lost workers must still be noticed once the store answers again.
        self._checking.addErrback(
            lambda f: self.log.failure("checking workers failed; retrying next round", f)
        )
        return self._checking

    async def _check(self) -> None:
        if self._tasks.closed:
            return
        now = self._reactor.seconds()
        lost = []
        for worker_id, worker in list(self.workers.items()):
            heard = self._heard.get(worker_id, worker.last_heard)
            if now - heard > self.alive_timeout:
                lost.append(worker_id)
        for worker_id in lost:
            if self._tasks.closed:
                # Dropped meanwhile (the member rebuilds from the store): its view of who is
                # silent is no longer trusted, and nothing it decides is written.
                return
            await self._declare_lost(
                worker_id, f"silent for more than {self.alive_timeout:.0f} s", now
            )
        if lost and not self._tasks.closed:
            await self._tasks.workers_lost(lost)
        if self._heard:
            flushed, self._heard = self._heard, {}
            for worker_id, when in flushed.items():
                if worker_id in self.workers:
                    self.workers[worker_id] = replace(self.workers[worker_id], last_heard=when)
            await self._db.write(nodes.touch_workers_thd, flushed)

    async def _declare_lost(self, worker_id: str, why: str, now: float) -> None:
        """Forget ``worker_id`` (its token may speak for its attempts under a new id); the
        caller relaunches its attempts."""
        worker = self.workers.pop(worker_id)
        self._lost_owners[worker_id] = worker.token_id
        self._heard.pop(worker_id, None)
        self.suspended.pop(worker_id, None)
        self.trusted.pop(worker_id, None)
        self.draining.discard(worker_id)
        self._tasks.replicated.replicas.worker_gone(worker_id)
        self.log.warn("worker {id} ({name}) lost: {why}", id=worker_id, name=worker.name, why=why)
        await self._db.write(nodes.set_worker_state_thd, worker_id, WORKER_LOST, now)


def _view(worker: WorkerRecord) -> WorkerView:
    return WorkerView(
        worker.id, worker.platform, worker.performance, worker.site or DEFAULT_SITE, worker.slots
    )
