"""The volunteer worker's pull loop: asks for work for its free slots, hands each attempt on.

The worker only ever opens connections (it may sit behind NAT): a Register Request (RR) first,
then Work Requests (WR) whenever it has free slots, a Work Alive (WA) every ``alive_interval``
seconds, a Work Result (WRS) when an attempt ends, and a giveback when it stops. The routes are
those of docs/protocol.md. A WRS carries the next WR (``"work"``): a coordinator that answers it
with ``"tasks"`` saves a round trip per task; one too busy to assign answers without them, and
gets a WR of its own.

This module keeps the pull loop, the volunteer's say over it (suspend, resume, fewer slots) and
stopping; the rest is in pieces of one job each: :mod:`.attempt_runner` (the life of each
attempt, from its assignment to its result; its states: :mod:`.attempts`), :mod:`.link`
(registration and every message to the coordinator, with their retries), :mod:`.uploader`
(storing outputs), :mod:`.reporter` (results batched into Work Results, their log lines),
:mod:`.alive` (Work Alive) and :mod:`.run_slots`.

With ``work_ahead``, a worker whose attempts are short holds twice as many attempts again as it
has slots (``AHEAD_PER_SLOT``): they wait for a slot (:mod:`xwch.worker.run_slots`) and start as
soon as one is free, rather than after a round trip to the coordinator; meanwhile results wait
for each other (at most ``ResultReporter.REPORT_LINGER``) to go as one WRS. Dask's workers do
the same (a queue fed ahead, results batched): on tasks of milliseconds, the requests are most
of the cost.

Everything the service does in the background runs through :class:`.background.BackgroundWork`,
which logs failures and is awaited by ``stopService``: no Deferred is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from xwch.errors import ApiError, Unreachable, XwchError
from xwch.protocol.codec import ProtocolError
from xwch.protocol.worker import HostFacts
from xwch.retry import Retry, RetryPolicy, retry_after_of
from xwch.transfer.meter import TransferReporter

from .alive import AliveBeat, EvictionLog
from .attempt_runner import AttemptFactory, AttemptRunner
from .attempts import HeldAttempt
from .background import BackgroundWork
from .last_registration import LastRegistration
from .link import (
    CacheContents,
    Coordinator,
    CoordinatorLink,
    LocateSite,
    PolicyListener,
    RegistrationRefused,
    Tasks,
    WorkAsk,
    WorkerLost,
)
from .reporter import ResultReporter
from .run_slots import SlotGate
from .uploader import OutputUploader, StoreObject


class WorkerService(Service):
    """A worker of ``facts.slots`` slots, talking to one coordinator."""

    log = Logger()

    # How long a Work Request may wait at the coordinator for work when there is none: it is
    # answered the moment some is ready (immediate dispatch on an idle platform), and an idle
    # worker asks once per WORK_WAIT rather than polling.
    WORK_WAIT = 20.0
    # Polling for work when the coordinator answers at once that there is none (one that
    # does not hold requests, or one stopping): quick at first, at most every 2 s.
    IDLE_POLL_START = 0.2
    IDLE_POLL_MAX = 2.0
    # How long stopping may take to give attempts back and see them end.
    GIVEBACK_TIMEOUT = 5.0
    # How long stopping, or giving attempts back, waits for their checkpoints to be saved: a
    # big checkpoint over a slow link may take long, a volunteer's shutdown may not.
    CHECKPOINT_PATIENCE = 30.0
    # Work ahead: only while attempts hold their slot less than this (a moving average), for
    # then the round trip to the coordinator is a large part of each. Longer attempts are
    # better left to whichever worker frees a slot first.
    SHORT_ATTEMPT = 1.0
    # Attempts held ahead, per slot, while attempts are short. With twice the slots waiting,
    # results can wait for each other until twice the slots have ended (and go in one Work
    # Result asking for as many), while the slots stay busy: a third fewer requests per task
    # than with as many ahead as slots (measured: the coordinator's CPU per task 1.15 ->
    # 0.83 ms on 10 ms tasks).
    AHEAD_PER_SLOT = 2

    def __init__(
        self,
        reactor: IReactorTime,
        coordinator: Coordinator,
        facts: HostFacts,
        new_attempt: AttemptFactory,
        store_object: StoreObject,
        pacer: PolicyListener,
        retry_policy: RetryPolicy | None = None,
        evictions: EvictionLog | None = None,
        locate_site: LocateSite | None = None,
        cache_contents: CacheContents | None = None,
        work_ahead: bool = False,
        last_registration: LastRegistration | None = None,
    ) -> None:
        self._reactor = reactor
        self._work_ahead = work_ahead
        self._link = CoordinatorLink(
            reactor,
            coordinator,
            facts,
            pacer,
            retry_policy,
            locate_site,
            cache_contents,
            on_registered=self._registered,
            on_lost=self.wake,
            suspended=lambda: self.suspended,
            last=last_registration,
        )
        # Attempts run at once: the registered slots, or fewer by the volunteer's preferences.
        self._slots = facts.slots
        self._slot_gate = SlotGate(self._slots)
        # Why the worker is suspended (see suspend()); None while it may compute.
        self.suspended: str | None = None
        self._stopping = False
        # Attempts whose checkpoints are being saved before they are given back.
        self._giving_back: set[str] = set()
        # Slots asked for by requests not answered yet (a WR, and the WRS carrying one): the
        # main loop must not ask for them again meanwhile, or the worker would get too much work.
        self._asking = 0
        self._background = BackgroundWork(lambda: self._stopping, told=(RegistrationRefused,))
        self._reporter = ResultReporter(reactor, self._link, self)
        self._attempts = AttemptRunner(
            reactor,
            new_attempt,
            self._slot_gate,
            OutputUploader(reactor, self._link, store_object, self._link.retry_policy),
            self._reporter,
            self,
            self._background.run,
        )
        # The idle poll's current period (see IDLE_POLL_START).
        self._idle = self.IDLE_POLL_START
        self._main: Deferred[None] | None = None
        # The main loop's Work Request while it is unanswered (it may wait for work), and
        # whether a suspension called it off.
        self._asking_work: Deferred[Any] | None = None
        self._work_called_off = False
        self._alive = AliveBeat(
            reactor,
            self._link,
            self._attempts.held_attempts,
            self._attempts.drop,
            self._background.run,
            evictions,
            pacer.transfer_report if isinstance(pacer, TransferReporter) else None,
            suspended=lambda: self.suspended,
        )
        self._wakeup: Deferred[None] | None = None

    # Service

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._main = self._background.run(self._work(), "the worker's main loop")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._shut_down())

    @property
    def worker_id(self) -> str | None:
        """This worker's id at the coordinator (None until registered)."""
        return self._link.worker_id

    @property
    def facts(self) -> HostFacts:
        return self._link.facts

    def when_registered(self) -> Deferred[str]:
        """Fires with the worker id once first registered; fails if the coordinator refuses."""
        return self._link.when_registered()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def running_attempts(self) -> list[str]:
        """Ids of the attempts this worker holds (running, or reporting their result)."""
        return self._attempts.running_attempts()

    def free_slots(self) -> int:
        """Slots no attempt runs in."""
        return self._slots - self._slot_gate.taken

    def _room(self) -> int:
        """How many more attempts this worker may take on: its slots, and AHEAD_PER_SLOT times
        as many while it works ahead, less those it holds.

        An attempt is held from its assignment until its result is answered: the next Work
        Request then follows the result, so the coordinator may hand this worker the tasks that
        result unblocked, whose inputs it holds.
        """
        return self._slots + self.ahead() - len(self._attempts)

    def _work_ask(self, slots: int, wait: float = 0.0) -> WorkAsk:
        """Work for ``slots``, saying how many of them have nothing to run (the others are
        asked for ahead: no straggler's duplicate should wait there), and how long the request
        may wait for work if there is none."""
        gate = self._slot_gate
        idle = max(0, self._slots - gate.taken - gate.waiting)
        return WorkAsk(slots, idle, wait)

    def ahead(self) -> int:
        """How many attempts this worker may hold beyond its slots: none unless it works ahead
        and its attempts are short."""
        typical = self._attempts.typical_duration
        if not self._work_ahead or typical is None or typical >= self.SHORT_ATTEMPT:
            return 0
        return self._slots * self.AHEAD_PER_SLOT

    def held_attempts(self) -> list[HeldAttempt]:
        """The attempts this worker holds and what each is doing."""
        return self._attempts.held_attempts()

    # The volunteer's preferences (see governor.py)

    def set_slots(self, slots: int) -> None:
        """Run at most ``slots`` attempts at once (never more than registered); running ones
        above that finish first."""
        slots = max(1, min(slots, self.facts.slots))
        if slots != self._slots:
            self.log.info("running at most {slots} attempts at once", slots=slots)
            self._slots = slots
            self._slot_gate.resize(slots)
            self.wake()

    def suspend(self, reason: str) -> None:
        """Stop the attempts' processes and ask for no work until :meth:`resume`.

        Work Alive goes on, listing the attempts as suspended, so the coordinator does not
        declare this worker lost; one goes at once, so that users see the worker suspended and
        why. A new reason while suspended goes with the next beat.
        """
        was = self.suspended
        self.suspended = reason
        if was is not None:
            return
        if self._asking_work is not None:
            # A Work Request waiting for work would bring attempts to a suspended worker: call
            # it off (the coordinator takes back any given as the line drops).
            self._work_called_off = True
            self._asking_work.cancel()
        self._attempts.suspend()
        self._alive.beat_now()

    def resume(self) -> None:
        """Continue the suspended attempts and ask for work again."""
        if self.suspended is None:
            return
        self.suspended = None
        self._attempts.resume()
        self._alive.beat_now()
        self.wake()

    @property
    def link(self) -> CoordinatorLink:
        """This worker's one way to the coordinator (checkpoints report through it too)."""
        return self._link

    def give_back_held(self, why: str) -> None:
        """Kill the attempts whose program has not ended, and give them back to run elsewhere
        (their checkpoints saved first)."""
        given = [
            h.attempt
            for h in self.held_attempts()
            if h.state != "reporting" and h.attempt not in self._giving_back
        ]
        if not given:
            return
        # Asked again at each of the governor's checks while the checkpoints are saved: those
        # on their way back are not given twice.
        self._giving_back.update(given)
        self._background.run(self._save_then_give_back(given, why), "giveback")

    async def _save_then_give_back(self, given: Sequence[str], why: str) -> None:
        try:
            await self._saved_checkpoints()
            for attempt_id in given:
                self._attempts.drop(attempt_id, f"given back: {why}")
        finally:
            self._giving_back.difference_update(given)
        await self._give_back(given)

    async def _saved_checkpoints(self) -> None:
        """The held attempts' checkpoints saved, within CHECKPOINT_PATIENCE."""
        saved = self._attempts.save_checkpoints()
        saved.addTimeout(self.CHECKPOINT_PATIENCE, self._reactor)
        try:
            await saved
        except (TimeoutError, CancelledError):
            self.log.warn("gave attempts back before their checkpoints were saved")

    # The pull loop

    async def _work(self) -> None:
        await self._link.register()
        errors = Retry(self._link.retry_policy)
        while not self._stopping:
            if self._link.lost:
                await self._link.register()
                continue
            free = self._room() - self._asking
            if free <= 0 or self.suspended is not None:
                # Woken when an attempt is reported, on resume (or when we are found lost).
                await self._nap(None)
                continue
            # Also right after a Work Result that asked for work and got none: this request
            # waits for some at the coordinator (answered at once with none, it naps below).
            asked_at = self._reactor.seconds()
            try:
                with self.asking_for(free):
                    self._asking_work = ensureDeferred(
                        self._link.request_work(self._work_ask(free, self.WORK_WAIT))
                    )
                    try:
                        tasks = await self._asking_work
                    finally:
                        self._asking_work = None
            except (CancelledError, Unreachable, ApiError, ProtocolError, WorkerLost) as e:
                if self._stopping:
                    return  # called off by stopping: nothing failed
                if self._work_called_off:
                    # Called off by a suspension (see suspend): the line dropped, as it should.
                    self._work_called_off = False
                    continue
                if isinstance(e, CancelledError):
                    raise
                if isinstance(e, WorkerLost):
                    continue  # registered again at the top of the loop
                delay = errors.next_delay(retry_after_of(e))
                self.log.warn(
                    "work request failed: {error}; trying again in {delay:.1f} s",
                    error=e,
                    delay=delay,
                )
                await deferLater(self._reactor, delay)
                continue
            errors.reset()
            if self._attempts.start(tasks):
                self._idle = self.IDLE_POLL_START
                continue
            if self._reactor.seconds() - asked_at >= self.WORK_WAIT / 2:
                continue  # it waited for work at the coordinator: ask again at once
            await self._idle_nap()

    @contextmanager
    def asking_for(self, slots: int) -> Iterator[None]:
        """Count ``slots`` as asked for while a request for them is unanswered."""
        self._asking += slots
        try:
            yield
        finally:
            self._asking -= slots

    async def _idle_nap(self) -> None:
        """No work was offered: wait, longer each time, before asking again."""
        idle = self._idle
        self._idle = min(idle * 2, self.IDLE_POLL_MAX)
        await self._nap(idle)

    async def _nap(self, delay: float | None) -> None:
        """Wait ``delay`` seconds (None: no limit), or less if :meth:`wake` is called."""
        wakeup = self._wakeup = Deferred()
        timer = None if delay is None else _timer(self._reactor, delay, self.wake)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        """End the pull loop's nap: an attempt is gone, the worker resumed, or it is lost."""
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.callback(None)

    def work_to_ask(self, freed: int) -> WorkAsk | None:
        """The work a Work Result freeing ``freed`` slots may ask for (theirs included)."""
        if self._stopping or self.suspended is not None or self._link.lost:
            return None
        slots = max(0, self._room() + freed - self._asking)
        return self._work_ask(slots) if slots else None

    def take_work(self, tasks: Tasks) -> None:
        """Start the tasks a Work Result's answer carries, as a Work Request's answer's."""
        if self._attempts.start(tasks):
            self._idle = self.IDLE_POLL_START

    def _registered(self, alive_interval: float) -> None:
        """Registered (again): Work Alive at the period the coordinator gave."""
        if not self._stopping:
            self._alive.start(alive_interval)

    # Stopping

    async def _shut_down(self) -> None:
        self._stopping = True
        self._reporter.stop()
        self._alive.stop()
        if self._main is not None:
            self._main.cancel()
        await self._saved_checkpoints()
        given = self.running_attempts()
        for attempt_id in given:
            self._attempts.drop(attempt_id, "given back: the worker is stopping")
        give_back = Deferred.fromCoroutine(self._give_back(given))
        # Everything was killed or cancelled: what is left ends promptly.
        both: Deferred[list[Any]] = gatherResults([give_back, self._background.settled()])
        both.addTimeout(self.GIVEBACK_TIMEOUT, self._reactor)
        try:
            await both
        except (TimeoutError, CancelledError):
            self.log.warn("stopped without hearing the end of every attempt or the giveback")
        self.log.info("worker stopped")

    async def _give_back(self, attempts: Sequence[str]) -> None:
        if not attempts or self.worker_id is None or self._link.lost:
            return
        try:
            await self._link.give_back(attempts)
        except (XwchError, CancelledError) as e:
            self.log.warn(
                "cannot give back {count} attempts ({error}); the coordinator relaunches them "
                "when it finds this worker silent",
                count=len(attempts),
                error=e,
            )
            return
        self.log.info("gave back {count} attempts", count=len(attempts))


def _timer(reactor: IReactorTime, delay: float, call: Callable[[], None]) -> Deferred[None]:
    """``call`` after ``delay`` seconds, unless the returned Deferred is cancelled first."""
    d = deferLater(reactor, delay, call)
    d.addErrback(lambda f: f.trap(CancelledError))
    return d
