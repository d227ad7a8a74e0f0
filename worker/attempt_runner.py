"""The attempts a worker holds, each seen through from its assignment to its result.

An assignment becomes an attempt (one the worker cannot even set up is reported failed at once,
so it runs elsewhere). The attempt waits for a slot (:mod:`.run_slots`), runs, has its outputs
stored (:mod:`.uploader`) and its result reported (:mod:`.reporter`); then its folder is
removed. Its states are those of :mod:`.attempts`. Dropping one (the coordinator cancels it, the
volunteer gives it back, the worker stops) kills it and forgets it without a result.

The pull loop (:mod:`.service`) asks for work and hands the answers here; what the attempts need
of it in return is :class:`PullLoop`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.protocol.objects import Source
from xwch.protocol.wire import OUTCOME_FAILED
from xwch.protocol.worker import Assignment, AttemptResult

from .attempts import Attempt, AttemptState, Held, HeldAttempt
from .executor import CompletedAttempt
from .link import Tasks, Unreadable
from .run_slots import SlotGate

# Makes the attempt for an assignment.
AttemptFactory = Callable[[Assignment], Attempt]
# Runs a coroutine in the background: its failure logged, awaited when the worker stops.
InBackground = Callable[[Coroutine[Any, Any, None], str], Deferred[None]]


class PullLoop(Protocol):
    """What the attempts need of the pull loop (a :class:`WorkerService`)."""

    @property
    def suspended(self) -> str | None:
        """Why the worker is suspended; None while it may compute."""

    @property
    def stopping(self) -> bool: ...

    def ahead(self) -> int:
        """How many attempts the worker may hold beyond its slots (0 unless it works ahead)."""

    def wake(self) -> None:
        """An attempt is gone: there is room for more work."""


@runtime_checkable
class Checkpointing(Protocol):
    """An attempt that may save its checkpoint on demand (an :class:`AttemptExecutor`)."""

    def save_checkpoint(self) -> Deferred[None]: ...


class ResultSender(Protocol):
    """Work Results (a :class:`ResultReporter`)."""

    @property
    def waiting(self) -> int:
        """Results waiting to be sent."""

    async def report(self, result: AttemptResult, frees_slot: bool, hold: bool) -> None: ...

    def flush(self) -> None: ...


class OutputStore(Protocol):
    """An attempt's outputs (an :class:`OutputUploader`)."""

    async def store(self, completed: CompletedAttempt, direct: Source | None) -> AttemptResult: ...


class AttemptRunner:
    """Starts the attempts of the pull loop's answers and sees each through its life."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        new_attempt: AttemptFactory,
        slot_gate: SlotGate,
        outputs: OutputStore,
        results: ResultSender,
        pull: PullLoop,
        in_background: InBackground,
    ) -> None:
        self._reactor = reactor
        self._new_attempt = new_attempt
        self._slot_gate = slot_gate
        self._outputs = outputs
        self._results = results
        self._pull = pull
        self._in_background = in_background
        self._held: dict[str, Held] = {}
        # The moving average of attempts' durations (None before the first).
        self.typical_duration: float | None = None

    def __len__(self) -> int:
        """Attempts held, dropped ones included until their life has ended."""
        return len(self._held)

    def running_attempts(self) -> list[str]:
        """Ids of the attempts held (running, or reporting their result)."""
        return [a for a, r in self._held.items() if not r.dropped]

    def held_attempts(self) -> list[HeldAttempt]:
        """The attempts held and what each is doing."""
        held = []
        for attempt_id, record in self._held.items():
            if record.dropped:
                continue
            if record.reporting:
                state = "reporting"
            elif record.state is AttemptState.WAITING_FOR_SLOT:
                state = "waiting"
            else:
                state = "running" if self._pull.suspended is None else "suspended"
            a = record.attempt.assignment
            held.append(HeldAttempt(attempt_id, a.job, a.task, state))
        return held

    def suspend(self) -> None:
        """Stop the processes of the attempts whose program has not ended."""
        for record in self._held.values():
            if not record.dropped and not record.reporting:
                record.attempt.suspend()

    def save_checkpoints(self) -> Deferred[Any]:
        """Stop the programs that keep a checkpoint and save it; fires once every save ended."""
        saves = [
            record.attempt.save_checkpoint()
            for record in self._held.values()
            if not record.dropped
            and not record.reporting
            and isinstance(record.attempt, Checkpointing)
        ]
        return gatherResults(saves, consumeErrors=True)

    def resume(self) -> None:
        for record in self._held.values():
            if not record.dropped:
                record.attempt.resume()

    def start(self, tasks: Tasks) -> int:
        """Start an attempt for each new assignment of ``tasks``; how many started."""
        started = 0
        for assignment in tasks:
            if isinstance(assignment, Unreadable):
                self._refuse_assignment(assignment.attempt, assignment.error)
                continue
            if assignment.attempt in self._held:
                continue
            try:
                attempt = self._new_attempt(assignment)
            except Exception as e:
                self.log.failure("cannot set up attempt {attempt}", attempt=assignment.attempt)
                self._refuse_assignment(assignment.attempt, e)
                continue
            record = self._held[assignment.attempt] = Held(attempt)
            if self._pull.suspended is not None:
                # Assigned by a Work Request sent before the suspension.
                attempt.suspend()
            # Debug: the executor logs the attempt's start with its pid, and each line costs
            # the worker about half a millisecond (a tenth of its CPU on trivial tasks).
            self.log.debug(
                "running attempt {attempt} of {job}/{task}",
                attempt=assignment.attempt,
                job=assignment.job,
                task=assignment.task,
            )
            record.life = self._in_background(
                self._attempt_life(record), f"attempt {assignment.attempt}"
            )
            started += 1
        return started

    def _refuse_assignment(self, attempt_id: str | None, error: Exception) -> None:
        """Report an assignment this worker cannot even start as failed, so it runs elsewhere."""
        self.log.error("cannot run an assignment: {error}", error=error)
        if attempt_id is not None and attempt_id not in self._held:
            result = AttemptResult(
                attempt=attempt_id,
                outcome=OUTCOME_FAILED,
                error=f"the worker cannot run this assignment: {error}",
            )
            self._in_background(self._report(result), f"result of attempt {attempt_id}")

    # An attempt's life

    async def _attempt_life(self, record: Held) -> None:
        attempt = record.attempt
        attempt_id = attempt.assignment.attempt
        try:
            await self._take_slot(record)
            try:
                result = await self._run(record)
            finally:
                # SENDING: the next attempt waiting may run while this result is on its way
                # (which goes with those held for company if none waits any more: see _report).
                self._give_back_slot(flush=record.state is not AttemptState.SENDING)
            if result is not None:
                await self._report(result, frees_slot=True)
        except CancelledError:
            if not record.dropped:
                raise
        finally:
            del self._held[attempt_id]
            # Not waited for: the attempt stops counting against the worker's room (the pull
            # loop's _room) once its result is answered.
            attempt.discard().addErrback(self._discard_failed, attempt_id)
            self._pull.wake()

    async def _run(self, record: Held) -> AttemptResult | None:
        """Run the attempt and store its outputs: the result to report (None: dropped)."""
        attempt = record.attempt
        attempt_id = attempt.assignment.attempt
        started = self._reactor.seconds()
        try:
            completed = await attempt.run()
        except Exception as e:
            # A bug, not the task's doing; still a result, so the task runs elsewhere.
            self.log.failure("attempt {attempt} broke the worker", attempt=attempt_id)
            completed = CompletedAttempt(
                AttemptResult(attempt_id, OUTCOME_FAILED, error=f"worker error: {e}"), {}
            )
        if record.dropped:
            return None
        record.move(AttemptState.REPORTING)
        result = await self._outputs.store(completed, attempt.assignment.upload)
        if record.dropped:
            # Cancelled while storing: a cancelled exchange may fail as a connection error
            # rather than CancelledError, so the storing may have ended normally.
            return None
        record.move(AttemptState.SENDING)
        # From its slot's point of view: preparing and storing count, not only the program.
        self._note_duration(self._reactor.seconds() - started)
        return result

    async def _take_slot(self, record: Held) -> None:
        """Wait for a slot to run ``record`` in (at once unless work was fetched ahead)."""
        waiting = self._slot_gate.take()
        record.slot_wait = None if waiting.called else waiting
        try:
            await waiting
        finally:
            record.slot_wait = None
        record.move(AttemptState.RUNNING)

    def _give_back_slot(self, flush: bool) -> None:
        self._slot_gate.give_back()
        if flush and self._slot_gate.waiting == 0:
            # Nothing left to run once these end: the results that waited go now, asking
            # for the next work.
            self._results.flush()

    def _note_duration(self, seconds: float) -> None:
        typical = self.typical_duration
        self.typical_duration = seconds if typical is None else 0.8 * typical + 0.2 * seconds

    def _discard_failed(self, failure: Failure, attempt_id: str) -> None:
        self.log.warn(
            "cannot remove the folder of attempt {attempt}: {error}",
            attempt=attempt_id,
            error=failure.value,
        )

    async def _report(self, result: AttemptResult, frees_slot: bool = False) -> None:
        """Work Result (see ResultReporter.report); while attempts wait to run, a result may
        wait for the next to end, to go with it: fewer requests, and the slots are busy
        meanwhile."""
        hold = (
            self._slot_gate.waiting > 0
            and self._results.waiting + 1 < self._pull.ahead()
            and not self._pull.stopping
        )
        await self._results.report(result, frees_slot, hold)

    def drop(self, attempt_id: str, why: str) -> None:
        """Kill an attempt whose result nobody wants, and forget it without reporting."""
        record = self._held.get(attempt_id)
        if record is None or record.dropped:
            return
        self.log.info("attempt {attempt} {why}", attempt=attempt_id, why=why)
        was = record.move(AttemptState.DROPPED)
        if was is AttemptState.WAITING_FOR_SLOT:
            # Never started: nothing to kill.
            if record.slot_wait is not None:
                record.slot_wait.cancel()
            return
        record.attempt.kill()
        # A Work Result on its way is not cut short but to stop: a Work Alive sent just after the
        # coordinator took the result lists the attempt and hears "cancel", and cancelling the
        # Work Result's exchange loses its answer, with the next tasks it may carry (the
        # coordinator would wait for them in vain). Its answer decides what the result is worth.
        cut_short = was is AttemptState.REPORTING or (
            was is AttemptState.SENDING and self._pull.stopping
        )
        if cut_short and record.life is not None:
            record.life.cancel()
