"""The one way a task's or an attempt's state changes.

Each call checks the change against the table of allowed transitions, changes memory, and adds
the change of the store's rows to the :class:`~xwch.store.records.Change` the tasks' manager
then writes under its fence (``TasksManager.record``): memory and store cannot drift apart,
because neither changes without the other. An impossible transition raises
:class:`ImpossibleTransition` before anything changes, in memory or in the ``Change``.

The tables allow what the tasks' manager does, including its less obvious moves: a task done
runs again when its outputs are lost or suspect (lineage, replication); a late result of an
attempt presumed lost counts for a task that waits again meanwhile (``ready``, or ``blocked``
by lineage); ``retry`` takes an ended job's failed, cancelled, ready and running tasks back to
``ready`` or ``blocked``. Memory never holds ``assigned``: that is the store's word for a task
running an attempt whose worker has not started it yet (:func:`attempt_begun`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

from xwch.coordinator.attempts import Attempt
from xwch.coordinator.job_state import TaskState
from xwch.errors import XwchError
from xwch.protocol.states import AttemptStatus, TaskStatus
from xwch.store.records import AttemptUpdate, Change, TaskUpdate

S = TypeVar("S", bound=StrEnum)

_T = TaskStatus
TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    _T.BLOCKED: frozenset({_T.READY, _T.DONE, _T.FAILED, _T.CANCELLED}),
    _T.READY: frozenset({_T.READY, _T.BLOCKED, _T.RUNNING, _T.DONE, _T.FAILED, _T.CANCELLED}),
    # Running to running: one more attempt (a duplicate of a straggler, a replica).
    _T.RUNNING: frozenset({_T.RUNNING, _T.READY, _T.BLOCKED, _T.DONE, _T.FAILED, _T.CANCELLED}),
    _T.ASSIGNED: frozenset(),
    _T.DONE: frozenset({_T.READY}),
    _T.FAILED: frozenset({_T.READY, _T.BLOCKED}),
    _T.CANCELLED: frozenset({_T.READY, _T.BLOCKED}),
}

_A = AttemptStatus
ATTEMPT_TRANSITIONS: Mapping[AttemptStatus, frozenset[AttemptStatus]] = {
    _A.RUNNING: frozenset({_A.SUCCEEDED, _A.FAILED, _A.LOST, _A.CANCELLED, _A.GIVEN_BACK}),
    # Its worker came back with it, or sent its (successful) result late.
    _A.LOST: frozenset({_A.RUNNING, _A.SUCCEEDED}),
    _A.SUCCEEDED: frozenset(),
    _A.FAILED: frozenset(),
    _A.CANCELLED: frozenset(),
    _A.GIVEN_BACK: frozenset(),
}


class ImpossibleTransition(XwchError):
    """A state change the tables do not allow: a bug of the tasks' manager, not of a caller."""


def move_tasks(
    job_id: str, tasks: Sequence[TaskState], to: TaskStatus, change: Change, **columns: object
) -> None:
    """Move ``tasks`` (of one job) to ``to``, and record it: their rows get that state and
    ``columns``, in one update for all of them."""
    _move(job_id, tasks, to, to, change, columns)


def move_to_assigned(job_id: str, t: TaskState, change: Change, **columns: object) -> None:
    """A worker takes an attempt of ``t``: running in memory, ``assigned`` in the store until
    the worker starts it (:func:`attempt_begun`)."""
    _move(job_id, [t], _T.RUNNING, _T.ASSIGNED, change, columns)


def _move(
    job_id: str,
    tasks: Sequence[TaskState],
    to: TaskStatus,
    stored: TaskStatus,
    change: Change,
    columns: Mapping[str, object],
) -> None:
    move_in_memory(job_id, tasks, to)
    if tasks:
        values = {"state": stored, **columns}
        change.task_updates.append(TaskUpdate(job_id, tuple(t.spec.id for t in tasks), values))


def move_in_memory(job_id: str, tasks: Sequence[TaskState], to: TaskStatus) -> None:
    """Move ``tasks`` to ``to`` in memory alone: only where the store's row already reads as
    ``to`` (a running task with no attempt left is ready to a recovering coordinator)."""
    for t in tasks:
        _check(TASK_TRANSITIONS, f"task {t.spec.id} of job {job_id}", t.state, to)
    for t in tasks:
        t.state = to


def record_task_columns(job_id: str, t: TaskState, change: Change, **columns: object) -> None:
    """Record other columns of a task's row than its state (failures, start time)."""
    if "state" in columns:
        raise ImpossibleTransition("a task's state changes through move_tasks")
    change.task_updates.append(TaskUpdate(job_id, (t.spec.id,), columns))


def attempt_begun(attempt: Attempt, change: Change, now: float) -> None:
    """Its worker started ``attempt``: its task, ``assigned`` in the store until now, is
    ``running`` there too (memory counted it running all along)."""
    attempt.begun = True
    change.task_updates.append(
        TaskUpdate(attempt.job_id, (attempt.task_id,), {"state": _T.RUNNING, "started": now})
    )


def move_attempt(
    attempt: Attempt,
    to: AttemptStatus,
    change: Change,
    *,
    ended: float | None,
    exit_code: int | None = None,
    error: str | None = None,
    stdout: str = "",
    stderr: str = "",
    worker_id: str | None = None,
) -> None:
    """Move ``attempt`` to ``to``, and record it (``worker_id``: the worker id it passes to)."""
    _check(ATTEMPT_TRANSITIONS, f"attempt {attempt.id}", attempt.status, to)
    attempt.status = to
    change.attempt_updates.append(
        AttemptUpdate(
            id=attempt.id,
            state=to,
            ended=ended,
            exit_code=exit_code,
            error=error,
            stdout=stdout,
            stderr=stderr,
            worker_id=worker_id,
        )
    )


def _check(table: Mapping[S, frozenset[S]], what: str, old: S, new: S) -> None:
    if new not in table[old]:
        raise ImpossibleTransition(f"{what} cannot go from {old} to {new}")
