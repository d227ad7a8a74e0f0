"""``logs --follow``: a task's attempts' output, each as it ends, until the task has ended.

A worker sends an attempt's standard output and error with its result, not while it runs: so
following prints each attempt once it has ended (a failed one, then the retry that follows),
and says on standard error which attempt it waits for meanwhile. It stops when the task has
ended: 0 when it is done, 1 when it failed or was cancelled (as ``wait`` does for a job).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from xwch.errors import ApiError, Unreachable, XwchError
from xwch.protocol.client import AttemptLog, TaskInfo
from xwch.protocol.states import TaskStatus

from .clock import now
from .coordinator import CoordinatorClient

# Attempt states of an attempt whose program has not ended yet (its output is not in).
UNFINISHED_ATTEMPTS = ("running", "assigned")
ENDED_TASKS = (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


class UnknownTask(XwchError):
    """The job has no such task (a usage error)."""


class LogFollower:
    """Polls one task's attempts every POLL_INTERVAL; prints each attempt's log as it ends."""

    # Attempts end within seconds to hours; a second is quick enough to read, and one light
    # request a second is nothing for the coordinator.
    POLL_INTERVAL = 1.0
    # How long the coordinator may stay unreachable while we follow (as JobFollower).
    UNREACHABLE_GRACE = 60.0

    def __init__(
        self,
        api: CoordinatorClient,
        reactor: IReactorTime,
        show: Callable[[AttemptLog], None],
        note: Callable[[str], None],
    ) -> None:
        self._api = api
        self._reactor = reactor
        self._show = show
        self._note = note
        self._unreachable_since: float | None = None

    async def follow(self, job_id: str, task_id: str, first: int | None = None) -> str:
        """Print attempts from ``first`` (None: the last one so far) on; the task's final
        state."""
        number = first
        told: tuple[int, str] | None = None
        while True:
            log = await self._log(job_id, task_id, number)
            if log is not None and log.state not in UNFINISHED_ATTEMPTS:
                self._show(log)
                number = log.attempt + 1
                continue
            task = await self._task(job_id, task_id)
            if task.state in ENDED_TASKS:
                # The attempt may have ended between the two questions: shown, if so.
                last = await self._log(job_id, task_id, number)
                if last is not None and last.state not in UNFINISHED_ATTEMPTS:
                    self._show(last)
                    number = last.attempt + 1
                    continue
                return task.state
            seen = (-1 if log is None else log.attempt, task.state if log is None else log.state)
            if seen != told:
                told = seen
                self._note(_waiting(task_id, task, log))
            await deferLater(self._reactor, self.POLL_INTERVAL, lambda: None)

    async def _log(self, job_id: str, task_id: str, number: int | None) -> AttemptLog | None:
        """Attempt ``number`` (None: the last) of the task; None while it does not exist."""
        while True:
            try:
                log = await self._api.logs(job_id, task_id, number)
                self._unreachable_since = None
                return log
            except ApiError as e:
                if e.status == 404:
                    self._unreachable_since = None
                    return None  # no such attempt yet (an unknown task is found by _task)
                if e.status != 503:
                    raise
            except Unreachable:
                self._check_grace()
            await deferLater(self._reactor, self.POLL_INTERVAL, lambda: None)

    async def _task(self, job_id: str, task_id: str) -> TaskInfo:
        while True:
            try:
                tasks = await self._api.tasks(job_id)
                self._unreachable_since = None
                break
            except ApiError as e:
                if e.status != 503:
                    raise
            except Unreachable:
                self._check_grace()
            await deferLater(self._reactor, self.POLL_INTERVAL, lambda: None)
        for task in tasks:
            if task.id == task_id:
                return task
        raise UnknownTask(f"job {job_id} has no task {task_id}")

    def _check_grace(self) -> None:
        moment = now(self._reactor)
        if self._unreachable_since is None:
            self._unreachable_since = moment
        if moment - self._unreachable_since >= self.UNREACHABLE_GRACE:
            raise Unreachable(
                f"the coordinator has not answered for {self.UNREACHABLE_GRACE:.0f} s"
            )


def _waiting(task_id: str, task: TaskInfo, log: AttemptLog | None) -> str:
    if log is None:
        return f"task {task_id} is {task.state}: waiting for its first attempt to end"
    where = f" on {log.worker}" if log.worker else ""
    return (
        f"task {task_id}, attempt {log.attempt}{where}: {log.state}; its output comes when it ends"
    )
